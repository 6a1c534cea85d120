"""AdamW with decay only where it belongs, and the warm-up + decay learning-rate schedule."""

from __future__ import annotations

import math

import torch

from rlhf.config.parts import OptimizerConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and norm weights (1-D tensors) get no decay,
    since shrinking a gain or an offset toward zero regularizes nothing useful."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (check `peft` and freezing settings)")
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    params = decay + no_decay
    # The fused kernel updates all tensors at once instead of one by one; it needs floating-point
    # parameters on the CPU or a CUDA GPU (not e.g. on an accelerator torch has no kernel for).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=cfg.lr,
        betas=(cfg.betas[0], cfg.betas[1]),
        eps=cfg.eps,
        fused=fused,
    )


def warmup_steps(cfg: OptimizerConfig, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps > 0 else int(cfg.warmup_ratio * total_steps)


def lr_multiplier(step: int, total_steps: int, warmup: int, shape: str) -> float:
    """Factor on the peak lr before optimizer step `step` (0-based) of `total_steps`.

    Warm-up rises linearly from 1/(warmup+1) to 1, so the very first step is not wasted at lr 0.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if shape == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {shape!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR following `lr_multiplier`; step it once per optimizer step."""
    warmup = warmup_steps(cfg, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, total_steps, warmup, cfg.scheduler)
    )


class GroupSchedule:
    """`build_scheduler`'s schedule for some of an optimizer's parameter groups, with a step count of
    its own: two of them drive one optimizer that holds two models' groups (under DeepSpeed PPO's
    policy and value head share the engine's one optimizer) as two optimizers' schedules would.
    `hold()` sets the groups' learning rate to 0 until `release()` (or the next `step()`)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, groups: list[int], cfg: OptimizerConfig, total_steps: int
    ) -> None:
        self.optimizer, self.groups, self.total_steps = optimizer, groups, total_steps
        self.warmup, self.shape = warmup_steps(cfg, total_steps), cfg.scheduler
        self.base_lrs = [optimizer.param_groups[i]["lr"] for i in groups]
        self.last_epoch = 0
        self.release()

    def _set(self, factor: float) -> None:
        for index, base in zip(self.groups, self.base_lrs):
            self.optimizer.param_groups[index]["lr"] = base * factor

    def release(self) -> None:
        self._set(lr_multiplier(self.last_epoch, self.total_steps, self.warmup, self.shape))

    def hold(self) -> None:
        self._set(0.0)

    def step(self) -> None:
        self.last_epoch += 1
        self.release()

    def get_last_lr(self) -> list[float]:
        return [self.optimizer.param_groups[i]["lr"] for i in self.groups]

    def state_dict(self) -> dict[str, int]:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.release()
