"""The held-out evaluation settings DPO and RRHF share (config only: no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf.config.core import ConfigError


@dataclass
class PreferenceEvalConfig:
    path: str | None = None
    """Held-out data of the same kind as `data`, read (and scored) like it; overrides `fraction`."""
    fraction: float = 0.0
    """Without `path`: this share of the training records (chosen with `seed`) is held out instead."""
    every: int = 0
    """Evaluate every N optimizer steps (0: only at the start and the end). Needs `path` or `fraction`."""
    batch_size: int = 8
    """Groups (a prompt with its completions) per evaluation forward pass on each process."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"`eval.fraction` must be in [0, 1), got {self.fraction}")
        if self.every < 0:
            raise ConfigError(f"`eval.every` must be >= 0, got {self.every}")
        if self.batch_size < 1:
            raise ConfigError(f"`eval.batch_size` must be at least 1, got {self.batch_size}")
