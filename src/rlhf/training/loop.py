"""The shared step loop: accumulate, clip, step, schedule, log, show progress.

Stages bring a `loss_fn(model, batch) -> (loss, metrics)` and their data; this loop owns the
mechanics every stage needs the same way, so each stage's module stays about its algorithm.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from rlhf.config.parts import OptimizerConfig
from rlhf.tracking import MetricsLogger
from rlhf.tracking.progress import progress_block
from rlhf.training.guards import NonFiniteGuard

LossFn = Callable[..., tuple[torch.Tensor, dict[str, Any]]]
"""`loss_fn(model, batch)` or, with a `count_fn`, `loss_fn(model, batch, num_items=N)`: (loss, metrics)."""


def make_accelerator(
    optim_cfg: OptimizerConfig,
    *,
    seed: int | None = None,
    cpu: bool = False,
    timeout_s: int | None = None,
    mixed_precision: str = "no",
):
    """An Accelerator set up for `optim_cfg` (gradient accumulation), seeded on every process.

    Under `torchrun --nproc_per_node N` on CPU, Accelerate picks up the process group (gloo);
    under `accelerate launch` it reads its own config (DDP, FSDP, DeepSpeed). `timeout_s` bounds
    how long a collective waits for the other processes (default: torch's 30 minutes), so a
    process that died or never joined becomes an error instead of a hang. `mixed_precision`:
    `no`, `bf16`, `fp16`, or `auto` (bf16 autocast on a GPU that supports it, else none).
    """
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed

    if not cpu and not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Accelerate sets up a multi-process CPU run (gloo) only when told it is on the CPU.
        cpu = True
    handlers = [InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))] if timeout_s else []
    from accelerate.state import AcceleratorState

    # Accelerate keeps one global state per process and refuses a second Accelerator with other
    # settings (e.g. another mixed precision); stages that run one after another in one process
    # (the pipeline, notebooks, tests) each need their own. Accelerate has no public call for this:
    # its own multi-model test scripts clear the state the same way, and accelerate is pinned
    # (pyproject.toml), so a change there shows in the pipeline tests, which run stages with
    # different settings back to back. The process group itself is kept (no `reset_partial_state`).
    AcceleratorState._reset_state()
    if mixed_precision == "auto":
        bf16_gpu = not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        mixed_precision = "bf16" if bf16_gpu else "no"
    accelerator = Accelerator(
        gradient_accumulation_steps=optim_cfg.gradient_accumulation_steps,
        cpu=cpu,
        kwargs_handlers=handlers,
        mixed_precision=mixed_precision,
    )
    if cpu:
        from rlhf.training.sharding import _select_engine_on_cpu

        _select_engine_on_cpu(accelerator)
    if seed is not None:
        set_seed(seed)
    return accelerator


def start_stage(
    name: str,
    cfg,
    optim_cfg: OptimizerConfig,
    *,
    mixed_precision: str = "no",
    resume: str | bool | None = None,
    overwrite: bool = False,
):
    """The opening every stage run shares: an Accelerator (`make_accelerator`, seeded with
    `cfg.seed`), a `say` that prints on the main process only, and the run directory
    (`cfg.output_dir`, with the resolved config and environment written into it). A run
    that does not `resume` is refused where an earlier run left checkpoints, unless `overwrite`
    (`check_fresh_start`), and starts with what that run logged cleared. Returns (accelerator, say,
    run_dir)."""
    from rlhf.tracking import prepare_run_dir
    from rlhf.training.checkpoint import check_fresh_start, start_fresh

    check_fresh_start(cfg.output_dir, resume=resume, overwrite=overwrite)
    accelerator = make_accelerator(optim_cfg, seed=cfg.seed, mixed_precision=mixed_precision)
    main = accelerator.is_main_process
    say = print if main else (lambda *a, **k: None)
    if main and not resume:
        start_fresh(cfg.output_dir)
    accelerator.wait_for_everyone()
    run_dir = prepare_run_dir(cfg.output_dir, cfg, seed=cfg.seed, main=main)
    say(f"rlhf {name}: run directory {run_dir}")
    return accelerator, say, run_dir


def items_per_step(cfg, num_processes: int) -> int:
    """Training items (rows, groups) one optimizer step sees: batch_size x processes x accumulation."""
    return cfg.batch_size * num_processes * cfg.optimizer.gradient_accumulation_steps


def stage_steps(cfg, num_items: int, num_processes: int) -> int:
    """Optimizer steps of a stage run: `cfg.max_steps`, else as many as `cfg.epochs` passes over
    `num_items` take (at least 1). `cfg` is any stage config with max_steps, epochs, batch_size
    and optimizer.gradient_accumulation_steps."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * num_items / items_per_step(cfg, num_processes)))


@dataclass
class LoopResult:
    """What a finished loop reports back."""

    steps: int
    """Optimizer steps taken."""
    history: list[dict[str, float]] = field(default_factory=list)
    """One row per optimizer step: the step's mean loss (over micro-batches and processes), lr, grad norm."""
    skipped: int = 0
    """Steps skipped for a NaN or infinite loss or gradient in this run of the loop."""


def _reduce(accelerator, values: dict[str, float], reduction: str) -> dict[str, float]:
    if accelerator.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], device=accelerator.device)
    tensor = accelerator.reduce(tensor, reduction=reduction)
    return dict(zip(keys, tensor.tolist()))


def _optimizer_step(accelerator, optimizer, scheduler, optim_cfg: OptimizerConfig, bad: int):
    """Clip, step, schedule, zero; or, when any process saw a non-finite loss in the step (`bad`
    counts this process's) or the gradient norm is not finite, zero without stepping. Returns (the
    learning rate this step used, the gradient norm before clipping, whether the step was skipped).
    The clipped parameters are the optimizer's: FSDP2 may swap a module's parameter objects after
    `prepare` (seen on the first forward of the root module's own weights), and the optimizer holds
    the ones that train. Under fp16 an infinite gradient is the loss scaler's to handle (it skips
    the step and lowers the scale), so only a non-finite loss counts there."""
    from rlhf.training.sharding import clip_grad_norm, is_deepspeed

    lr = optimizer.param_groups[0]["lr"]  # read before the schedule moves on
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    limit = optim_cfg.max_grad_norm
    norm = clip_grad_norm(accelerator, trainable, limit if limit is not None else math.inf)
    grad_norm = float(norm) if norm is not None else None  # DeepSpeed may not report one
    # fp16 has a loss scaler (Accelerate's, or DeepSpeed's own) that skips overflowing steps itself.
    scaled = accelerator.scaler is not None or (
        is_deepspeed(accelerator) and accelerator.mixed_precision == "fp16"
    )
    if grad_norm is not None and not math.isfinite(grad_norm) and not scaled:
        bad += 1
    if _reduce(accelerator, {"bad": float(bad)}, "sum")["bad"] > 0:
        if is_deepspeed(accelerator):
            raise NonFiniteGuard(0, lr).unskippable(
                "a NaN or infinite loss or gradient under DeepSpeed, whose engine steps inside the backward pass"
            )
        if accelerator.scaler is not None:
            # fp16: the loss scaler must see the non-finite gradients: it skips the step itself and
            # lowers the scale (left out, its next unscale would fail).
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return lr, grad_norm, True
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return lr, grad_norm, False


def _accumulate_and_step(
    accelerator, model, optimizer, scheduler, optim_cfg: OptimizerConfig, window: list[Any],
    loss_of: Callable[[Any], tuple[torch.Tensor, dict[str, float]]], scale: float,
) -> tuple[dict[str, float], float, float | None, bool]:  # fmt: skip
    """One optimizer step over the micro-batches of `window`: backward of each `loss_of(batch)` x
    `scale`, then `_optimizer_step`. Returns (the summed loss and metrics, lr, grad norm, skipped)."""
    sums: dict[str, float] = {}
    bad = 0
    for batch in window:
        with accelerator.accumulate(model):
            loss, metrics = loss_of(batch)
            accelerator.backward(loss * scale)
            loss_value = loss.detach().item()
            bad += 0 if math.isfinite(loss_value) else 1
            for key, value in {"loss": loss_value, **metrics}.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            if accelerator.sync_gradients:
                lr, grad_norm, skipped = _optimizer_step(accelerator, optimizer, scheduler, optim_cfg, bad)
    return sums, lr, grad_norm, skipped


def _step_row(accelerator, sums: dict[str, float], accumulation: int, *, shares: bool) -> dict[str, float]:
    """The step's row from its micro-batches' summed loss and metrics: metrics averaged over
    micro-batches and processes; the loss added up when each micro-batch's loss is its share of the
    step's (`shares`, a `count_fn` loop), else averaged too."""
    loss_sum = sums.pop("loss")
    row = _reduce(accelerator, {k: v / accumulation for k, v in sums.items()}, "mean")
    if shares:
        row["loss"] = _reduce(accelerator, {"loss": loss_sum}, "sum")["loss"]
    else:
        row["loss"] = _reduce(accelerator, {"loss": loss_sum / accumulation}, "mean")["loss"]
    return row


def _windows(batches: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive groups of `size` micro-batches (one optimizer step's worth), cycling over `batches`."""
    stream = itertools.chain.from_iterable(itertools.repeat(batches))
    while True:
        window = list(itertools.islice(stream, size))
        if len(window) < size:
            return
        yield window


class StepWatcher(Protocol):
    """What `watch_steps` calls: a benchmark's or tool's view of the training loops of this process."""

    def started(self) -> None:
        """A loop is about to take its first step (models loaded, data ready)."""

    def stepped(self, step: int, row: dict[str, float], window: list[Any]) -> None:
        """Optimizer step `step` is done: its logged `row`, and its micro-batches (`window`; PPO: [])."""

    def ended(self) -> None:
        """The loop took its last step."""


_WATCHERS: list[StepWatcher] = []


@contextlib.contextmanager
def watch_steps(watcher: StepWatcher) -> Iterator[StepWatcher]:
    """Let `watcher` see every step of every training loop (`train_loop`, PPO's) run in this process
    while the block runs: how benchmarks time and count steps without changing any stage."""
    _WATCHERS.append(watcher)
    try:
        yield watcher
    finally:
        _WATCHERS.remove(watcher)


def notify(event: str, *args: Any) -> None:
    """Tell the watchers (see `watch_steps`) that a loop `started`, `stepped` or `ended`."""
    for watcher in list(_WATCHERS):
        getattr(watcher, event)(*args)


@dataclass
class LoopOptions:
    """How `train_loop` runs, besides what it trains: its length, the optimizer settings it steps
    with, what it logs and shows, where it resumes, and its hooks."""

    max_steps: int
    """Optimizer steps to reach (counting `start_step`)."""
    optim_cfg: OptimizerConfig
    """Gradient accumulation and clipping (the optimizer itself is built by the stage)."""
    logger: MetricsLogger | None = None
    """Where each step's row is logged (every `log_every` steps and the last)."""
    log_every: int = 10
    """Log every N optimizer steps."""
    progress: bool = True
    """Show a progress bar (on the main process)."""
    desc: str = "train"
    """The progress bar's label and the logged metrics' prefix (`train/loss`)."""
    start_step: int = 0
    """Steps already taken (a resumed run)."""
    count_fn: Callable[[Any], int] | None = None
    """Items of a micro-batch the loss is normalized by over the whole step (see `train_loop`)."""
    on_step: Callable[[int, dict[str, float]], None] | None = None
    """Called after every optimizer step with (step, row): evaluation, checkpoints, timing."""
    max_nonfinite: int = 3
    """Steps that may be skipped for a NaN or infinite loss or gradient (`NonFiniteGuard`)."""


def train_loop(
    accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    batches: Iterable[Any],
    loss_fn: LossFn,
    options: LoopOptions,
) -> LoopResult:
    """Run optimizer steps until `options.max_steps`, cycling over `batches` (this process's
    micro-batches).

    One optimizer step consumes `gradient_accumulation_steps` micro-batches on every process,
    drawn from `batches` in order and nothing more, so a resumable stream knows its position.

    Without `count_fn`, `loss_fn(model, batch)` returns a mean over its micro-batch, and the step's
    loss is the mean over micro-batches and processes. With `count_fn(batch) -> int` (e.g. label
    tokens), the loss is normalized by the count over the whole step instead: the loop sums the
    counts of all micro-batches on all processes into N and calls `loss_fn(model, batch,
    num_items=N)`, which must return its micro-batch's *sum* divided by N. Every item then weighs
    the same however items fall into micro-batches and processes, so 2 processes x batch 2, or
    accumulation 2 x batch 2, give the loss and gradient of 1 process x batch 4.

    A step with a NaN or infinite loss or gradient on any process is skipped (`NonFiniteGuard`):
    its row says `skipped: 1`, a warning is printed, and past `max_nonfinite` skipped steps the run
    stops with `NonFiniteError`.
    """
    o = options
    model.train()
    result = LoopResult(steps=o.start_step)
    guard = NonFiniteGuard(o.max_nonfinite, o.optim_cfg.lr)
    accumulation = o.optim_cfg.gradient_accumulation_steps
    # Normalized losses are scaled back up by processes x accumulation, which DDP's gradient mean
    # and Accelerate's division by the accumulation steps take off again.
    scale = accelerator.num_processes * accumulation if o.count_fn is not None else 1
    windows = _windows(batches, accumulation)
    with progress_block(o.max_steps, o.desc, enabled=o.progress and accelerator.is_main_process) as bar:
        bar.update(o.start_step)
        notify("started")
        while result.steps < o.max_steps:
            # Checked before drawing: a finished loop has taken exactly max_steps windows from `batches`.
            window = next(windows, None)
            if window is None:
                break
            row = _loop_step(accelerator, model, optimizer, scheduler, o, window, loss_fn, scale)
            result.steps += 1
            result.history.append(row)
            if row.get("skipped"):
                guard.skip(f"step {result.steps}: a NaN or infinite loss or gradient", accelerator.print)
                result.skipped = guard.skipped
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if o.logger is not None and (result.steps % o.log_every == 0 or result.steps == o.max_steps):
                o.logger.log(result.steps, {f"{o.desc}/{k}": v for k, v in row.items()})
            if o.on_step is not None:
                o.on_step(result.steps, row)
            notify("stepped", result.steps, row, window)
        notify("ended")
    return result


def _loop_step(
    accelerator, model, optimizer, scheduler, o: LoopOptions, window: list[Any], loss_fn: LossFn, scale: float
) -> dict[str, float]:
    """One optimizer step over `window`: its row (loss, metrics, lr, grad norm, `skipped`)."""
    kwargs = {}
    if o.count_fn is not None:
        count = sum(o.count_fn(batch) for batch in window)
        kwargs["num_items"] = max(1, int(_reduce(accelerator, {"n": count}, "sum")["n"]))
    loss_of = functools.partial(loss_fn, model, **kwargs)
    sums, lr, grad_norm, skipped = _accumulate_and_step(
        accelerator, model, optimizer, scheduler, o.optim_cfg, window, loss_of, scale
    )
    row = _step_row(accelerator, sums, o.optim_cfg.gradient_accumulation_steps, shares=o.count_fn is not None)
    row["lr"] = lr
    if grad_norm is not None:
        row["grad_norm"] = grad_norm
    if skipped:
        row["skipped"] = 1.0
    return row


def stage_on_step(
    *,
    steps: int,
    history: list[dict],
    eval_every: int,
    run_eval: Callable[[int], None] | None,
    save_every: int,
    save: Callable[[int], None],
) -> Callable[[int, dict], None]:
    """The `on_step` of a stage run: keep the step's row in `history`, evaluate every `eval_every`
    steps (when `run_eval` is given) and checkpoint every `save_every` steps; neither after the
    last step, which the stage evaluates and saves itself."""

    def on_step(step: int, row: dict) -> None:
        history.append({"step": step, **row})
        if run_eval is not None and eval_every and step % eval_every == 0 and step < steps:
            run_eval(step)
        if save_every and step % save_every == 0 and step < steps:
            save(step)

    return on_step
