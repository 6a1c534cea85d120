"""`rlhf export`: turn a saved language model (full, or base + adapter) into a plain transformers model.

The typical use is the end of a LoRA run: the run saved only the adapter, and serving tools
want one directory that `AutoModelForCausalLM.from_pretrained` (or, for an encoder-decoder such as
FLAN-T5, `AutoModelForSeq2SeqLM.from_pretrained`) loads. Export loads the base in
float32, attaches the adapter, merges the low-rank update into the weights (in float32, so the
merge itself rounds nothing beyond float32) and saves in the requested dtype, atomically.

Only language models (causal or encoder-decoder): reward/value models are already saved for plain transformers by
`save_scalar_model` (merged by default).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from rlhf.config.core import ConfigError
from rlhf.config.parts import BUILTIN_TINY, ModelConfig
from rlhf.models.adapters import AdapterError, find_peft_model, merge_adapters
from rlhf.models.load import ADAPTER_CONFIG, ModelLoadError, load_lm, load_tokenizer
from rlhf.models.save import save_model
from rlhf.models.scalar import SCALAR_FILE

logger = logging.getLogger(__name__)

EXPORT_DTYPES = ("float32", "bfloat16", "float16")
# peft's prompt-learning adapter types: extra inputs (virtual tokens), no weights to merge into.
_PROMPT_LEARNING = {
    "PROMPT_TUNING",
    "MULTITASK_PROMPT_TUNING",
    "P_TUNING",
    "PREFIX_TUNING",
    "CPT",
    "CARTRIDGE",
}


def export_model(source: str, output: str, *, merge: bool = True, dtype: str | None = None) -> dict:
    """Load `source`, merge its adapter (if any, with `merge`), save to `output`; a summary dict.

    `source` is anything `model.path` takes: a directory saved by `save_model` (a full model, or
    an adapter whose `adapter_config.json` names its base), a hub id, or `builtin:tiny`.
    `dtype` (float32, bfloat16, float16) is the dtype written; default: the base's own. With
    `merge=False` the adapter is written as an adapter again (e.g. to change its dtype).

    A QLoRA adapter (trained on a 4-bit base) merges onto the base loaded unquantized, as
    `merge_adapters` prescribes: merging into 4-bit weights would round the sum back to 4 bits.
    Caveat: the adapter was trained against the 4-bit-rounded base, so the merged model's outputs
    differ slightly from the QLoRA model's (by the 4-bit rounding of the base weights). A
    prompt-tuning adapter has no weights to merge: `AdapterError`; use its directory as `model.path`.

    The summary: source, output, architecture (the class written, e.g. `T5ForConditionalGeneration`),
    base (the adapter's base model or None), adapter (peft type or None), merged (bool), dtype and
    parameters (count written, tied weights once).
    """
    if dtype is not None and dtype not in EXPORT_DTYPES:
        raise ConfigError(f"export dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    if source != BUILTIN_TINY and Path(output).expanduser().resolve() == Path(source).expanduser().resolve():
        raise ModelLoadError(f"export output {output} is the source itself; write to another directory")
    local = Path(source).expanduser()
    _check_causal_lm(source, local)
    adapter_dir = local if (local / ADAPTER_CONFIG).is_file() else None
    base, adapter = None, None
    if adapter_dir is not None:
        base, adapter, prompt_learning = _read_adapter(adapter_dir)
        if merge and prompt_learning:
            raise AdapterError(
                f"{source} is a {adapter} adapter: a soft prompt is extra input, not a change of weights, "
                "so it cannot be merged; use the adapter directory itself as model.path"
            )
    target = dtype or _saved_dtype(base or source) or "float32"

    model_cfg = ModelConfig(path=source, dtype="float32", quantization="none")
    tokenizer = load_tokenizer(model_cfg)
    model = load_lm(model_cfg, for_training=False, tokenizer=tokenizer)
    if merge and find_peft_model(model) is not None:
        model = merge_adapters(model)
    model.to(getattr(torch, target))
    save_model(model, tokenizer, output)
    merged = merge and adapter is not None
    peft_model = find_peft_model(model)
    written = peft_model.get_base_model() if peft_model is not None else model
    summary = {
        "source": source,
        "output": str(output),
        "architecture": type(written).__name__,
        "base": base,
        "adapter": adapter,
        "merged": merged,
        "dtype": target,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    logger.info("exported %s to %s (%s)", source, output, summary)
    return summary


def _check_causal_lm(source: str, local: Path) -> None:
    """Refuse reward/value models early, before their (possibly large) weights are loaded."""
    if (local / SCALAR_FILE).is_file():
        raise ModelLoadError(
            f"{source} is a reward/value model ({SCALAR_FILE}); rlhf export handles language models only "
            "(a merged reward model already loads with AutoModelForSequenceClassification)"
        )
    config_file = local / "config.json"
    if config_file.is_file():
        architectures = json.loads(config_file.read_text()).get("architectures") or []
        if architectures and all(name.endswith("ForSequenceClassification") for name in architectures):
            raise ModelLoadError(
                f"{source} holds a {architectures[0]}, not a language model; rlhf export handles language models only"
            )


def _read_adapter(adapter_dir: Path) -> tuple[str, str, bool]:
    """(base model, peft type, whether it is prompt learning) from `adapter_config.json`.

    Read as JSON rather than through peft, whose import alone takes a second and prints
    bitsandbytes notices: a refused export should answer fast with one line.
    """
    config_file = adapter_dir / ADAPTER_CONFIG
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {config_file}: {exc}") from exc
    if config.get("task_type") == "SEQ_CLS":
        raise ModelLoadError(
            f"{adapter_dir} is a reward/value model adapter (task SEQ_CLS); rlhf export handles language models only"
        )
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(
            f"adapter in {adapter_dir} does not name its base model (base_model_name_or_path)"
        )
    peft_type = str(config.get("peft_type") or "unknown").upper()
    return base, peft_type.lower(), peft_type in _PROMPT_LEARNING


def _saved_dtype(path: str) -> str | None:
    """The dtype `path`'s checkpoint was saved in (float32 for `builtin:tiny`), if it says."""
    if path == BUILTIN_TINY:
        return "float32"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(
            str(Path(path).expanduser()) if Path(path).expanduser().is_dir() else path
        )
    except (OSError, ValueError, KeyError):
        return None  # the load itself reports what is wrong with the path
    name = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "")
    name = name.removeprefix("torch.")
    return name if name in EXPORT_DTYPES else None
