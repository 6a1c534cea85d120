"""Parameter-efficient fine-tuning through the `peft` library: wrap, count, disable, merge.

Named `adapters` so it does not shadow the `peft` package. The reference model of PPO/DPO is
the same weights with the adapter switched off (`adapters_disabled`), so it costs no memory.
`peft` is imported inside the functions: importing it imports bitsandbytes (about a second,
and noisy on machines without its GPU kernels), which a run without adapters never needs.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from rlhf.config.parts import PeftConfig


class AdapterError(ValueError):
    """An adapter operation that cannot work on this model (no adapter, cannot merge, ...)."""


def apply_peft(
    model: nn.Module, peft_cfg: PeftConfig | None, task_type: str = "CAUSAL_LM", *, tokenizer=None
):
    """Wrap `model` in the adapter `peft_cfg` asks for; `method: none` returns `model` unchanged.

    - lora / qlora: `LoraConfig` on `target_modules` (None: peft's per-architecture default, or
      every linear layer where peft has none, e.g. Phi-3; `[all-linear]`: every linear layer but
      the output head). A quantized base is first passed
      through `prepare_model_for_kbit_training`; qlora insists on a 4-bit base.
    - prompt_tuning: `num_virtual_tokens` trainable input embeddings, random, or copied from the
      embeddings of `prompt_tuning_init_text` (needs `tokenizer`; the text is repeated or cut to fit).
    `task_type="SEQ_CLS"` makes peft train and save the classification head in full as well.
    """
    if peft_cfg is None or peft_cfg.method == "none":
        return model
    from peft import PromptTuningConfig, get_peft_model

    if peft_cfg.method == "qlora" and not getattr(model, "is_loaded_in_4bit", False):
        raise AdapterError(
            "peft.method qlora needs the base model loaded in 4-bit (model.quantization: 4bit)"
        )
    model = prepare_quantized_base(model)
    if peft_cfg.method in ("lora", "qlora"):
        try:
            return get_peft_model(model, _lora_config(peft_cfg, task_type, _model_type(model)))
        except ValueError as err:  # a module name the model lacks, ...: say what to set, not peft's traceback
            raise AdapterError(
                f"LoRA cannot be put on this {_model_type(model) or 'model'}: {str(err).splitlines()[0][:200]}; "
                "set `peft.target_modules` to module names it has, or [all-linear]"
            ) from None
    if peft_cfg.method == "prompt_tuning":
        peft_model = get_peft_model(
            model, PromptTuningConfig(task_type=task_type, num_virtual_tokens=peft_cfg.num_virtual_tokens)
        )
        if peft_cfg.prompt_tuning_init_text:
            _init_prompt_from_text(peft_model, peft_cfg.prompt_tuning_init_text, tokenizer)
        return peft_model
    raise AdapterError(f"unknown peft.method {peft_cfg.method!r}")


def _model_type(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def _lora_config(peft_cfg: PeftConfig, task_type: str, model_type: str | None):
    from peft import LoraConfig
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as KNOWN

    target_modules: list[str] | str | None = peft_cfg.target_modules
    if target_modules == ["all-linear"]:
        target_modules = "all-linear"  # peft's keyword is the string, not a one-element list
    if target_modules is None and model_type not in KNOWN:
        # peft has no default for this architecture (Phi-3, ...): every linear layer but the head.
        target_modules = "all-linear"
    return LoraConfig(
        task_type=task_type,
        r=peft_cfg.lora_rank,
        lora_alpha=peft_cfg.lora_alpha,  # type: ignore[arg-type]  # peft annotates int, computes alpha / r in float
        lora_dropout=peft_cfg.lora_dropout,
        target_modules=target_modules,
        # A copy: peft appends the classifier head's name to this list for SEQ_CLS.
        modules_to_save=list(peft_cfg.modules_to_save) if peft_cfg.modules_to_save else None,
        bias="none",
    )


def _init_prompt_from_text(peft_model, text: str, tokenizer) -> None:
    """Set the virtual tokens to the word embeddings of `text`, repeated or cut to length.

    Done here rather than by peft's TEXT init, which reloads a tokenizer by name (impossible for
    `builtin:tiny`); the saved config then says RANDOM, which only describes the start point.
    """
    if tokenizer is None:
        raise AdapterError("peft.prompt_tuning_init_text needs the tokenizer")
    token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not token_ids:
        raise AdapterError(f"peft.prompt_tuning_init_text {text!r} encodes to no tokens")
    prompt = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight  # (V, H)
    num_virtual = prompt.shape[0]
    token_ids = (token_ids * math.ceil(num_virtual / len(token_ids)))[:num_virtual]
    embeddings = peft_model.get_input_embeddings()
    with torch.no_grad():
        ids = torch.tensor(token_ids, device=embeddings.weight.device)
        prompt.copy_(embeddings(ids).to(device=prompt.device, dtype=prompt.dtype))


def is_quantized(model: nn.Module) -> bool:
    """Whether `model` was loaded in 4-bit or 8-bit through bitsandbytes."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_quantized_base(model: nn.Module) -> nn.Module:
    """Make a 4/8-bit base ready for adapters to train on it; other models pass through.

    peft's `prepare_model_for_kbit_training` freezes the base, upcasts the few non-quantized
    weights (norms, embeddings) to float32 for stable training and keeps checkpointing as set.
    """
    if not is_quantized(model):
        return model
    from peft import prepare_model_for_kbit_training

    keep_4bit_trainable(model)
    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=bool(getattr(model, "is_gradient_checkpointing", False)),
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def keep_4bit_trainable(model: Any) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight for a faster kernel the first
    time the layer runs in eval mode without gradients (sampling, a packing check, an evaluation);
    that kernel has no backward, so adapters on it would silently stop learning (every gradient 0).
    Turn the repacking off: the layer then computes as in training (GPUs never repack)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def trainable_parameter_summary(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as the values they hold, a
    ZeRO-3 partitioned parameter as its whole size."""
    trainable = total = 0
    for param in model.parameters():
        count = getattr(param, "ds_numel", param.numel())
        if type(param).__name__ == "Params4bit":
            count *= 2 * param.element_size()  # two 4-bit values per byte of packed storage
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total


def find_peft_model(model: nn.Module):
    """`model` itself if it is a `PeftModel`, else the first one inside it (e.g. in a ScalarModel)."""
    peft = sys.modules.get("peft")
    if peft is None:  # no PeftModel can exist before peft is imported; do not import it for nothing
        return None
    for module in model.modules():
        if isinstance(module, peft.PeftModel):
            return module
    return None


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block `model` computes as its base model: the reference model, for free.

    LoRA layers are bypassed, a soft prompt is not prepended, and heads trained through
    `modules_to_save` fall back to their original weights. Raises `AdapterError` when there is
    no adapter: a fully fine-tuned model has no base left in it, so the caller must keep a
    separate frozen copy as the reference instead. Train/eval mode is left to the caller.
    """
    peft_model = find_peft_model(model)
    if peft_model is None:
        raise AdapterError(
            "model has no adapter to disable: with peft.method none the reference model must be "
            "a separate frozen copy"
        )
    with peft_model.disable_adapter():
        yield model


def reference_forward(model: nn.Module, *args, **kwargs):
    """`model(*args, **kwargs)` without gradients and with the adapter disabled (see above)."""
    with torch.no_grad(), adapters_disabled(model):
        return model(*args, **kwargs)


def merge_adapters(model: nn.Module) -> nn.Module:
    """The base model with the LoRA update merged into its weights; `model` without an adapter as is.

    The merge happens in place: afterwards use the returned model, not the PeftModel. Prompt
    tuning cannot be merged (the soft prompt is extra input, not a change of weights), and a
    4-bit/8-bit base would round the merged weights, so both raise `AdapterError`.
    """
    peft_model = find_peft_model(model)
    if peft_model is not model:
        if peft_model is not None:
            raise AdapterError(f"merge_adapters takes the PeftModel itself, got a {type(model).__name__}")
        return model
    if model.active_peft_config.is_prompt_learning:
        raise AdapterError("prompt tuning cannot be merged into the weights; save the adapter (merge=False)")
    if is_quantized(model.get_base_model()):
        raise AdapterError(
            "cannot merge an adapter exactly into a quantized base: save the adapter, load that "
            "directory with model.quantization none and merge there"
        )
    return model.merge_and_unload()
