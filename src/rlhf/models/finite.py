"""No model with NaN or infinite weights is ever written as a run's output."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class NonFiniteWeightsError(RuntimeError):
    """A model about to be saved holds NaN or infinite weights."""


def check_finite_weights(model: nn.Module, directory: str | Path) -> None:
    """Raise `NonFiniteWeightsError` (one line: how many tensors, the first one's name) when any
    floating-point parameter or buffer of `model` is NaN or infinite; `directory` is where it was
    going. Runs on whatever device the weights are on, one tensor at a time."""
    bad = []
    total = 0
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        total += 1
        if not bool(torch.isfinite(tensor.detach()).all()):
            bad.append(name)
    if bad:
        raise NonFiniteWeightsError(
            f"not saving {directory}: {len(bad)} of {total} weight tensors hold NaN or infinite values "
            f"(first: {bad[0]}); the training diverged (lower optimizer.lr, or check the data for extreme values)"
        )
