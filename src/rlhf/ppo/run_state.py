"""What one PPO run holds from its first step to its last: the models as Accelerate prepared them,
the controllers and counters that a checkpoint saves, and the collectives every step uses.

Built once by `run_ppo`; the experience maker, the update, the checkpoint and the final save all
take it, instead of a dozen loose arguments each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf.losses.ppo import MovingBaseline
from rlhf.ppo.config import PpoConfig
from rlhf.training.guards import NonFiniteGuard


@dataclass
class Models:
    """What the update trains, as Accelerate prepared it."""

    policy: torch.nn.Module
    """The `PolicyValue` (DDP-wrapped in a multi-process run; sharded in place under FSDP2)."""
    critic: torch.nn.Module | None
    """A separate critic (`ScalarModel`), or None (shared head or no critic)."""
    policy_optimizer: Any
    """AdamW over the policy's trainable parameters (LM or adapter)."""
    value_optimizer: Any | None
    """AdamW over the critic's trainable parameters (separate critic or shared head); None without one."""
    policy_scheduler: Any
    """The policy's learning-rate schedule."""
    value_scheduler: Any | None
    """The critic's learning-rate schedule; None without a critic."""
    policy_params: list[torch.nn.Parameter]
    """The policy's trainable parameters (gradient clipping)."""
    value_params: list[torch.nn.Parameter]
    """The critic's trainable parameters (clipped on their own)."""
    pad_id: int
    """The tokenizer's pad id (collating rollout sequences)."""


@dataclass
class UpdateState:
    """What the update carries from step to step (checkpointed)."""

    baseline: MovingBaseline
    """REINFORCE's moving baseline of the sequence rewards."""
    guard: NonFiniteGuard
    """Counts the updates skipped for a NaN/inf loss, reward or gradient (`max_nonfinite`)."""
    ptx_position: int = 0
    """PPO-ptx batches consumed so far."""


@dataclass
class PpoRun:
    """One PPO run's models, state and collectives (see the module docstring)."""

    cfg: PpoConfig
    """The resolved config."""
    accelerator: Any
    """The run's Accelerator (processes, device, DDP)."""
    run_dir: Path
    """`output_dir`, created."""
    models: Models
    """The trained models, optimizers and schedules, as prepared."""
    policy: Any
    """The unwrapped `PolicyValue` (what samples and what is saved)."""
    reference: Callable[..., Any]
    """reference(input_ids, attention_mask, response) -> the reference's `PolicyOutput`."""
    kl_ctl: Any
    """The KL coefficient's controller (fixed or adaptive; checkpointed)."""
    state: UpdateState
    """Baseline and counters the update carries (checkpointed)."""
    reward_fn: Any
    """The `RewardFunction` (its running statistics are checkpointed)."""
    tokenizer: Any
    """The policy's tokenizer (left padding)."""
    say: Callable[..., None]
    """`print` on the main process, nothing elsewhere."""
    sharding: dict[str, Any] = field(default_factory=dict)
    """What the run is sharded on (`rlhf.training.sharding.sharding_report`), for the summary."""
    data_report: dict[str, Any] = field(default_factory=dict)
    """The prompts' load report (`LoadReport.as_dict`), for the summary."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One row of metrics per finished step (restored on resume)."""

    @property
    def critic(self) -> torch.nn.Module | None:
        """The separate critic, unwrapped; None with a shared head or no critic."""
        return self.accelerator.unwrap_model(self.models.critic) if self.models.critic is not None else None

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over processes (itself with one), back on the CPU."""
        if self.accelerator.num_processes == 1:
            return t
        return self.accelerator.reduce(t.to(self.accelerator.device), reduction="sum").cpu()

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """`t` of every process concatenated in rank order (itself with one), on the CPU."""
        if self.accelerator.num_processes == 1:
            return t
        from accelerate.utils import gather

        return gather(t.to(self.accelerator.device)).cpu()
