"""The non-finite guard every training stage shares, PPO's updates included: a step whose loss,
reward or gradient is NaN or infinite on any process is skipped (weights and optimizer state
untouched) with a warning, and the run stops with a clear error once more steps than the
configured limit (`max_nonfinite`) were skipped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class NonFiniteError(RuntimeError):
    """Too many NaN/inf losses, rewards or gradients: the run stops (a one-line error, non-zero exit)."""


@dataclass
class NonFiniteGuard:
    """Counts the steps skipped for a NaN or infinite value and stops the run past `limit`."""

    limit: int
    """`max_nonfinite`: skipped steps allowed; one more stops the run."""
    lr: float
    """The learning rate, named in the error (a usual cause)."""
    unit: str = "optimizer steps"
    """What a skipped step is called in the messages (PPO: `updates`)."""
    skipped: int = 0
    """Steps skipped so far (a resumed run starts from its checkpoint's count)."""

    def skip(self, what: str, say: Callable[..., None] = print) -> None:
        """Count one skipped step, where `what` says what was not finite; warn, and raise
        `NonFiniteError` once more than `limit` were skipped."""
        self.skipped += 1
        say(f"[guard] warning: {what}; the step was skipped ({self.skipped} so far)", flush=True)
        if self.skipped > self.limit:
            raise NonFiniteError(self.message())

    def message(self) -> str:
        """The error that stops the run."""
        return (
            f"{self.skipped} {self.unit} had a NaN or infinite loss, reward or gradient (limit "
            f"`max_nonfinite` {self.limit}); the run stops. Usual causes: a learning rate too high "
            f"(optimizer.lr {self.lr:g}), fp16 overflow (try bf16 or float32), or extreme values in the data "
            "or the reward"
        )

    def unskippable(self, what: str) -> NonFiniteError:
        """The error for a NaN/inf met where the step cannot be skipped (an engine that steps
        inside the backward pass, DeepSpeed): the run stops at once."""
        return NonFiniteError(
            f"{what}: the step could not be skipped, and the run stops. Usual causes: a learning rate "
            f"too high (optimizer.lr {self.lr:g}), fp16 overflow (try bf16 or float32), or extreme values "
            "in the data or the reward"
        )
