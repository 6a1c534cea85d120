"""The non-finite guard every training stage shares: a step whose loss or gradient is NaN or infinite
on any process is skipped (weights and optimizer state untouched) with a warning, and the run stops
with a clear error once more steps than the configured limit were skipped."""

from __future__ import annotations


class NonFiniteError(RuntimeError):
    """Too many NaN/inf losses, rewards or gradients: the run stops (a one-line error, non-zero exit)."""


def too_many_message(skipped: int, limit: int, lr: float) -> str:
    """The error that stops a run after `skipped` (> `limit`) skipped steps."""
    return (
        f"{skipped} optimizer steps had a NaN or infinite loss or gradient (limit `max_nonfinite` {limit}); "
        f"the run stops. Usual causes: a learning rate too high (optimizer.lr {lr:g}), fp16 overflow "
        "(try bf16 or float32), or extreme values in the data"
    )
