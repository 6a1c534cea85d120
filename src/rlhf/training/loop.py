"""The shared step loop: accumulate, clip, step, schedule, log, show progress.

Stages bring a `loss_fn(model, batch) -> (loss, metrics)` and their data; this loop owns the
mechanics every stage needs the same way, so each stage's module stays about its algorithm.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from rlhf.config.parts import OptimizerConfig
from rlhf.tracking import MetricsLogger, progress_bar

LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]


def make_accelerator(
    optim_cfg: OptimizerConfig, *, seed: int | None = None, cpu: bool = False, timeout_s: int | None = None
):
    """An Accelerator set up for `optim_cfg` (gradient accumulation), seeded on every process.

    Under `torchrun --nproc_per_node N` on CPU, Accelerate picks up the process group (gloo);
    under `accelerate launch` it reads its own config (DDP, FSDP, DeepSpeed). `timeout_s` bounds
    how long a collective waits for the other processes (default: torch's 30 minutes), so a
    process that died or never joined becomes an error instead of a hang.
    """
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed

    if not cpu and not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Accelerate sets up a multi-process CPU run (gloo) only when told it is on the CPU.
        cpu = True
    handlers = [InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))] if timeout_s else []
    accelerator = Accelerator(
        gradient_accumulation_steps=optim_cfg.gradient_accumulation_steps, cpu=cpu, kwargs_handlers=handlers
    )
    if seed is not None:
        set_seed(seed)
    return accelerator


@dataclass
class LoopResult:
    """What a finished loop reports back."""

    steps: int
    """Optimizer steps taken."""
    history: list[dict[str, float]] = field(default_factory=list)
    """One row per optimizer step: the step's mean loss (over micro-batches and processes), lr, grad norm."""


def _mean_over_processes(accelerator, values: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], device=accelerator.device)
    tensor = accelerator.reduce(tensor, reduction="mean")
    return dict(zip(keys, tensor.tolist()))


def train_loop(
    *,
    accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    batches: Iterable[Any],
    loss_fn: LossFn,
    max_steps: int,
    optim_cfg: OptimizerConfig,
    logger: MetricsLogger | None = None,
    log_every: int = 10,
    progress: bool = True,
    desc: str = "train",
    start_step: int = 0,
) -> LoopResult:
    """Run optimizer steps until `max_steps`, cycling over `batches` (already `accelerator.prepare`d).

    One optimizer step consumes `gradient_accumulation_steps` micro-batches on every process.
    """
    model.train()
    result = LoopResult(steps=start_step)
    bar = progress_bar(max_steps, desc, enabled=progress and accelerator.is_main_process)
    bar.update(start_step)
    sums: dict[str, float] = {}
    micro = 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    for batch in itertools.chain.from_iterable(itertools.repeat(batches)):
        if result.steps >= max_steps:
            break
        with accelerator.accumulate(model):
            loss, metrics = loss_fn(model, batch)
            accelerator.backward(loss)
            for key, value in {"loss": loss.detach().item(), **metrics}.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            micro += 1
            if not accelerator.sync_gradients:
                continue
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses, before the schedule moves on
            grad_norm = None
            if optim_cfg.max_grad_norm is not None:
                grad_norm = accelerator.clip_grad_norm_(trainable, optim_cfg.max_grad_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        row = _mean_over_processes(accelerator, {k: v / micro for k, v in sums.items()})
        row["lr"] = lr
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        sums, micro = {}, 0
        result.steps += 1
        result.history.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if logger is not None and (result.steps % log_every == 0 or result.steps == max_steps):
            logger.log(result.steps, {f"{desc}/{k}": v for k, v in row.items()})
    bar.close()
    return result
