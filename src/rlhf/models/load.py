"""Loading tokenizers and models from a `ModelConfig`: hub ids, local directories, `builtin:tiny`.

Every failure to find or read a model is re-raised as a one-line `ModelLoadError` naming the
path, so a typo in a config never ends in a page of transformers traceback.

A local directory saved by `save_model` with an adapter (it has `adapter_config.json`) loads as
its base model plus that adapter, so `path` may point at an SFT adapter and the next stage goes
on from there: with `peft.method none` that adapter itself trains on; with a new adapter method
the saved one is first merged into the base (impossible on a 4/8-bit base: there, keep training
the saved adapter with `peft.method none` and `model.quantization 4bit`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf.config.parts import BUILTIN_TINY, ModelConfig, PeftConfig
from rlhf.models.adapters import apply_peft, merge_adapters, prepare_quantized_base
from rlhf.models.kind import Kind, kind_of_config
from rlhf.models.tiny import build_tiny_tokenizer, save_tiny

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be found or read; the message is one line naming the path."""


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    """`auto` -> bfloat16 on a CUDA GPU that supports it, else float32; or the named dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected auto or one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def load_tokenizer(model_cfg: ModelConfig, padding_side: str = "right") -> PreTrainedTokenizerBase:
    """The tokenizer of `model_cfg.tokenizer` (default: `model_cfg.path`), always with a pad token.

    A tokenizer without a pad token gets its unk token as pad (never seen in real text with byte
    fallback), else its EOS with a warning. Padding is always masked through `attention_mask`
    in this project, never by comparing ids with the pad id, so pad == EOS does not hide EOS.
    """
    source = model_cfg.tokenizer or model_cfg.path
    adapter_dir = _adapter_dir(source)
    if adapter_dir is not None and not (adapter_dir / "tokenizer_config.json").is_file():
        source = _adapter_base(adapter_dir)
    if source == BUILTIN_TINY:
        tokenizer = build_tiny_tokenizer()
    else:
        _check_local_path(source)
        kwargs: dict[str, Any] = {"trust_remote_code": model_cfg.trust_remote_code}
        if model_cfg.revision and source == model_cfg.path and not os.path.isdir(source):
            kwargs["revision"] = model_cfg.revision
        tokenizer = _load_or_raise(
            "tokenizer", source, lambda: AutoTokenizer.from_pretrained(source, **kwargs)
        )
    _ensure_pad_token(tokenizer, source)
    tokenizer.padding_side = padding_side
    return tokenizer


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.unk_token_id is not None:
        tokenizer.pad_token = tokenizer.unk_token
        logger.info(
            "tokenizer of %s has no pad token; padding with its unk token %r", source, tokenizer.unk_token
        )
    elif tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
        logger.warning(
            "tokenizer of %s has no pad or unk token; padding with EOS %r (padding is masked by "
            "attention_mask, so EOS itself is still trained)",
            source,
            tokenizer.eos_token,
        )
    else:
        raise ModelLoadError(f"tokenizer of {source!r} has no pad, unk or eos token to pad with; add one")


def load_lm(
    model_cfg: ModelConfig,
    peft_cfg: PeftConfig | None = None,
    *,
    for_training: bool = True,
    tokenizer: PreTrainedTokenizerBase | None = None,
):
    """A language model that writes text (a `PeftModel` when `peft_cfg` asks for adapters), ready to
    train or to run: a decoder-only causal LM, or an encoder-decoder (T5, FLAN-T5, BART) whose
    encoder reads the prompt and whose decoder writes the answer. The kind comes from the
    checkpoint's config (`rlhf.models.kind`): an encoder-decoder is never loaded as a causal LM (its
    decoder alone), and an encoder-only model is refused in one line, before any weights load.

    `for_training=False` returns it frozen in eval mode and ignores `peft_cfg`. `tokenizer`, when
    given, sets the model's pad id to the tokenizer's (and initialises a prompt from text).
    """
    from transformers import AutoModelForSeq2SeqLM

    kind = kind_of(model_cfg.path, trust_remote_code=model_cfg.trust_remote_code, revision=model_cfg.revision)
    if kind == "encoder":
        raise ModelLoadError(
            f"{model_cfg.path} is an encoder-only model: it cannot write text, so it cannot be a policy; "
            "it can be a reward model (`rlhf reward`, `reward.model`)"
        )
    seq2seq = kind == "seq2seq"
    return load_pretrained(
        AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM,
        model_cfg,
        peft_cfg,
        for_training=for_training,
        task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
        tokenizer=tokenizer,
    )


def kind_of(path: str, *, trust_remote_code: bool = False, revision: str | None = None) -> Kind:
    """The kind of the checkpoint at `path` (a directory, an adapter directory, a hub id or
    `builtin:tiny`), from its config alone: no weights are read (see `rlhf.models.kind`)."""
    base = adapter_base_path(path)
    if base == BUILTIN_TINY:
        return "causal"
    return kind_of_config(read_config(base, trust_remote_code=trust_remote_code, revision=revision))


def read_config(path: str, *, trust_remote_code: bool = False, revision: str | None = None):
    """The transformers config of the checkpoint at `path` (a directory or a hub id)."""
    from transformers import AutoConfig

    _check_local_path(path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision and not os.path.isdir(os.path.expanduser(path)):
        kwargs["revision"] = revision
    return _load_or_raise(
        "config", path, lambda: AutoConfig.from_pretrained(os.path.expanduser(path), **kwargs)
    )


def load_pretrained(
    auto_cls,
    model_cfg: ModelConfig,
    peft_cfg: PeftConfig | None = None,
    *,
    for_training: bool,
    task_type: str,
    tokenizer: PreTrainedTokenizerBase | None = None,
    **from_pretrained_kwargs,
):
    """Load with `auto_cls` (an `AutoModelFor...` class), then checkpointing and adapters."""
    method = peft_cfg.method if peft_cfg is not None else "none"
    quantization = _quantization(model_cfg, method)
    adapter_dir = _adapter_dir(model_cfg.path)
    if quantization != "none" and for_training and method == "none" and adapter_dir is None:
        raise ModelLoadError(
            f"model.quantization={quantization} freezes the base weights: train adapters on top "
            "(peft.method lora or qlora) or set model.quantization none"
        )
    base_path = _adapter_base(adapter_dir) if adapter_dir is not None else model_cfg.path
    model: Any = _from_pretrained(auto_cls, model_cfg, base_path, quantization, **from_pretrained_kwargs)
    if tokenizer is None and method == "prompt_tuning" and peft_cfg and peft_cfg.prompt_tuning_init_text:
        tokenizer = load_tokenizer(model_cfg)
    if tokenizer is not None:
        _sync_pad_token(model, tokenizer)
    if for_training and model_cfg.gradient_checkpointing:
        # Non-reentrant checkpointing; transformers also makes the embedding output require grad,
        # which PEFT needs (with a frozen base nothing else in a checkpointed block would).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if adapter_dir is not None:
        if for_training:
            model = prepare_quantized_base(model)
        model = _attach_saved_adapter(model, adapter_dir, trainable=for_training and method == "none")
        if for_training and method != "none":
            model = merge_adapters(model)  # the new adapter goes on the base with the saved one merged
    if not for_training:
        model.eval()
        model.requires_grad_(False)
        return model
    return apply_peft(model, peft_cfg, task_type, tokenizer=tokenizer)


def _quantization(model_cfg: ModelConfig, method: str) -> str:
    if method != "qlora":
        return model_cfg.quantization
    if model_cfg.quantization == "8bit":
        raise ModelLoadError(
            "peft.method qlora is LoRA on a 4-bit base; model.quantization 8bit contradicts it"
        )
    return "4bit"


def _from_pretrained(
    auto_cls, model_cfg: ModelConfig, path: str, quantization: str, **extra
) -> PreTrainedModel:
    kwargs = {"dtype": resolve_dtype(model_cfg.dtype), "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.revision and path == model_cfg.path and not os.path.isdir(path):
        kwargs["revision"] = model_cfg.revision
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if quantization != "none":
        classifier = getattr(auto_cls, "__name__", "") == "AutoModelForSequenceClassification"
        kwargs["quantization_config"] = _bnb_config(model_cfg, quantization, classifier=classifier)
        if torch.cuda.is_available():
            # bitsandbytes quantizes while placing the weights, so they must land on this process's GPU.
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    kwargs.update(extra)
    with _checkpoint_dir(path) as directory:
        model = _load_or_raise("model", path, lambda: auto_cls.from_pretrained(directory, **kwargs))
    if path == BUILTIN_TINY:
        # Loaded from a temporary directory; record the name that loads it again.
        model.config._name_or_path = BUILTIN_TINY
        model.name_or_path = BUILTIN_TINY
    return model


CLASSIFIER_HEADS = ["score", "classifier", "classification_head"]
"""A classifier's head modules, kept unquantized: trained in full, and an encoder-decoder's head
(a hidden layer, then the labels) would otherwise be quantized in part."""


def _bnb_config(model_cfg: ModelConfig, quantization: str, *, classifier: bool = False):
    from transformers import BitsAndBytesConfig  # a config class only; bitsandbytes loads with the model

    skip = {"llm_int8_skip_modules": CLASSIFIER_HEADS} if classifier else {}
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, **skip)
    compute = model_cfg.bnb_4bit_compute_dtype
    return BitsAndBytesConfig(
        **skip,
        load_in_4bit=True,
        bnb_4bit_quant_type=model_cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=model_cfg.bnb_4bit_double_quant,
        bnb_4bit_compute_dtype=resolve_dtype(model_cfg.dtype if compute == "auto" else compute),
    )


@contextlib.contextmanager
def _checkpoint_dir(path: str) -> Iterator[str]:
    """`path` itself, or for `builtin:tiny` a temporary directory holding it.

    Going through a real directory lets the tiny model use every `from_pretrained` option
    (dtype, attention kernel, 4/8-bit quantization) exactly as a hub model does.
    """
    if path != BUILTIN_TINY:
        _check_local_path(path)
        yield os.path.expanduser(path)
        return
    with tempfile.TemporaryDirectory(prefix="rlhf-tiny-") as directory:
        save_tiny(directory)
        yield directory


def _check_local_path(path: str) -> None:
    """Fail fast for a path that is clearly local (not a hub id) and missing."""
    looks_local = os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1
    if looks_local and not os.path.isdir(os.path.expanduser(path)):
        raise ModelLoadError(f"model directory not found: {path}")


def _load_or_raise(what: str, path: str, load):
    try:
        return load()
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise ModelLoadError(f"cannot load {what} from {path}: {reason}") from exc


def _adapter_dir(path: str) -> Path | None:
    directory = Path(path).expanduser()
    return directory if (directory / ADAPTER_CONFIG).is_file() else None


def _adapter_base(adapter_dir: Path) -> str:
    base = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(
            f"adapter in {adapter_dir} does not name its base model (base_model_name_or_path)"
        )
    return base


def adapter_base_path(path: str) -> str:
    """The base model an adapter directory names, or `path` itself when it holds no adapter."""
    adapter_dir = _adapter_dir(path)
    return _adapter_base(adapter_dir) if adapter_dir is not None else path


def _attach_saved_adapter(model: PreTrainedModel, adapter_dir: Path, *, trainable: bool):
    from peft import PeftModel

    return _load_or_raise(
        "adapter",
        str(adapter_dir),
        lambda: PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable),
    )


def _sync_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    # Batches are padded by the tokenizer, so the model's own pad id (used e.g. by transformers'
    # sequence-classification pooling and by generate) must be the tokenizer's.
    model.config.pad_token_id = tokenizer.pad_token_id
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id
