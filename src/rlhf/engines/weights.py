"""A live model's weights under the names of its Hugging Face checkpoint, for an inference engine
that loads checkpoints (vLLM): a plain model as it is; a LoRA model as its base with the adapter's
update W + (alpha / r) B A added (`merged`), or its base alone (for an engine that serves the
adapter itself). Nothing is modified in the model; tensors are views or fresh sums.

A model sharded by FSDP2 or DeepSpeed ZeRO-3 gives its weights whole: each one is gathered from
every process as it is reached (a collective: every process of the run iterates the same weights in
the same order)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

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
        state = model.state_dict(keep_vars=True)  # ZeRO-3's parameters keep what gathers them
        whole = _Gathered(state)
        for name, tensor in state.items():
            yield name, whole(tensor).detach()
        return
    if peft_model.active_peft_config.is_prompt_learning:
        raise UnsupportedAdapterError(
            "a prompt-tuning policy cannot be sent to vLLM (its soft prompt is not a weight): use engine hf"
        )
    base = peft_model.get_base_model()
    adapter = peft_model.active_adapter
    state = base.state_dict(keep_vars=True)
    whole = _Gathered(state)
    for key, tensor in state.items():
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
                with _zero3_gathered(base.get_submodule(owner)):
                    delta = whole(_delta(base.get_submodule(owner), adapter))
                yield name, (whole(tensor) + delta.to(tensor.dtype)).detach()
                continue
        yield name, whole(tensor).detach()


class _Gathered:
    """Sharded tensors (FSDP2's DTensors, ZeRO-3's partitioned parameters) made whole, one at a
    time; other tensors as they are. A weight that `state` holds under two names (tied embeddings)
    is gathered once and kept, so that both names give the same whole tensor and the tie stays
    visible; the rest is not kept."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        counts = Counter(_shard_key(t) for t in state.values())
        self.tied = {key for key, count in counts.items() if key is not None and count > 1}
        self.done: dict[tuple[Any, ...], torch.Tensor] = {}

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _shard_key(tensor)
        if key is None:
            return tensor
        if key not in self.tied:
            return _whole(tensor)
        if key not in self.done:
            self.done[key] = _whole(tensor)
        return self.done[key]


def _shard_key(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    """What identifies a sharded weight across its names: (where this process's shard lives, the
    whole shape) of a DTensor, the parameter itself under ZeRO-3; None for other tensors."""
    from torch.distributed.tensor import DTensor

    if hasattr(tensor, "ds_id"):
        return ("zero3", id(tensor))
    if not isinstance(tensor, DTensor):
        return None
    return tensor.to_local().untyped_storage().data_ptr(), tuple(tensor.shape)


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's or a ZeRO-3 parameter's whole value, gathered from every process (a collective)."""
    if not hasattr(tensor, "ds_id"):
        return tensor.full_tensor()  # type: ignore[attr-defined]  # a DTensor (_shard_key said so)
    import deepspeed

    with deepspeed.zero.GatheredParameters([tensor], modifier_rank=None):
        return tensor.detach().clone()


def _zero3_gathered(module: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """`module`'s ZeRO-3 parameters gathered whole while inside (a collective); nothing elsewhere."""
    partitioned = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)


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
