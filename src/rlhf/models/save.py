"""Saving models in Hugging Face format (safetensors), atomically.

Everything is written into a temporary directory next to the target and renamed into place
at the end, so an interrupted save never leaves a half-written model where a good one was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from rlhf.config.parts import BUILTIN_TINY
from rlhf.files import atomic_directory
from rlhf.models.adapters import find_peft_model, merge_adapters


def save_model(model: nn.Module, tokenizer, directory: str | Path, *, merge: bool = False) -> nn.Module:
    """Save `model` (and `tokenizer`, if given) to `directory`; returns the model that was saved.

    A PeftModel saves only its adapter (adapter_config.json names the base model, so
    `load_lm(ModelConfig(path=directory))` rebuilds it). With `merge=True` the LoRA
    update is merged first and the full model is saved, loadable by plain transformers; the
    merge is in place, so keep using the returned model.
    """
    from rlhf.models.finite import check_finite_weights

    check_finite_weights(model, directory)
    if merge:
        model = merge_adapters(model)
    with atomic_directory(directory) as staging:
        save_pretrained(model, staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    return model


def save_pretrained(model: Any, directory: Path) -> None:
    """`model.save_pretrained(directory)`; safetensors is the default format of both libraries."""
    peft_model = find_peft_model(model)
    if (
        peft_model is model
        and peft_model.peft_config[peft_model.active_adapter].base_model_name_or_path == BUILTIN_TINY
    ):
        # peft would look for builtin:tiny's config to see if the vocabulary grew, and warn that
        # it cannot find it; the tiny vocabulary is fixed, so there is nothing to check.
        model.save_pretrained(directory, save_embedding_layers=False)
    else:
        model.save_pretrained(directory)
