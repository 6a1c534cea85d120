"""A live model's weights under the names of its Hugging Face checkpoint, for an inference engine
that loads checkpoints (vLLM): a plain model as it is; a LoRA model as its base with the adapter's
update W + (alpha / r) B A added (`merged`), or its base alone (for an engine that serves the
adapter itself). Nothing is modified in the model; tensors are views or fresh sums."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from rlhf.models.adapters import find_peft_model

_LORA_KEYS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")


class UnsupportedAdapterError(ValueError):
    """The model's adapter cannot be handed to an engine as weights (prompt tuning, a quantized base)."""


def checkpoint_weights(model: nn.Module, *, merged: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every weight of `model` as its Hugging Face checkpoint names it.

    `merged`: LoRA updates are added to their base weights; otherwise the base weights alone. A
    model without an adapter gives its own state dict either way.
    """
    peft_model = find_peft_model(model)
    if peft_model is None:
        yield from model.state_dict().items()
        return
    if peft_model.active_peft_config.is_prompt_learning:
        raise UnsupportedAdapterError(
            "a prompt-tuning policy cannot be sent to vLLM (its soft prompt is not a weight): use engine hf"
        )
    base = peft_model.get_base_model()
    adapter = peft_model.active_adapter
    for key, tensor in base.state_dict().items():
        if any(f".{part}." in key for part in _LORA_KEYS) or ".original_module." in key:
            continue
        if getattr(tensor, "quant_state", None) is not None or tensor.dtype in (torch.uint8, torch.int8):
            raise UnsupportedAdapterError(
                f"{key} is quantized (QLoRA): vLLM cannot take a merged 4-bit/8-bit base; use peft.method lora "
                "or engine hf"
            )
        name = key.replace(f".modules_to_save.{adapter}.", ".")
        if ".base_layer." in name:
            owner = key.split(".base_layer.")[0]
            name = name.replace(".base_layer.", ".")
            if merged and key.endswith(".base_layer.weight"):
                tensor = tensor + _delta(base.get_submodule(owner), adapter).to(tensor.dtype)
        yield name, tensor.detach()


def adapter_unties_embeddings(model: nn.Module) -> bool:
    """Whether `model` ties its output matrix to its input embedding but an adapter changes one of
    the two (LoRA or `modules_to_save` on `lm_head` or `embed_tokens`): its merged weights are then
    two matrices, and an engine must load them untied."""
    peft_model = find_peft_model(model)
    if peft_model is None:
        return False
    base = peft_model.get_base_model()
    if not getattr(base.config, "tie_word_embeddings", False):
        return False
    output = base.get_output_embeddings()
    inputs = base.get_input_embeddings()
    return any(hasattr(m, "lora_A") or hasattr(m, "modules_to_save") for m in (output, inputs))


def _delta(module: nn.Module, adapter: str) -> torch.Tensor:
    """The LoRA update of one wrapped layer (zeros when the adapter is not on it)."""
    get_delta = getattr(module, "get_delta_weight", None)
    if get_delta is None or adapter not in getattr(module, "lora_A", {}):
        return torch.zeros(())
    with torch.no_grad():
        return get_delta(adapter)
