"""Resumable checkpoints, written atomically.

    <run>/checkpoints/step-000200/
        model/               the model as `save_model` writes it: a Hugging Face directory, or the
                             adapter (adapter_config.json names the base) — usable on its own
        optimizer.pt         AdamW state (moments, step counts)
        scheduler.pt         learning-rate schedule position
        rng/rank-<r>.pt      Python, NumPy and torch (CPU and CUDA) generator states of each process
        trainer_state.json   step, data position, the loss history so far, and the config
        extra.pt             what else a stage needs to continue (PPO: critic, its optimizer, KL
                             controller, reward statistics), when it passes any

Every file is written into `.step-000200.tmp-<id>/` and the directory is renamed into place once all
processes have finished writing, so a `step-*` directory is always complete: a run killed while
saving leaves only a hidden temporary directory, which the next save or resume ignores.

Single-process and DDP runs: every process holds the full model and optimizer state, and the main
process writes `model/` and `optimizer.pt`. FSDP and DeepSpeed runs shard that state: each process
writes its part in the engine's own format instead,

        sharded/             torch.distributed.checkpoint files (FSDP), or DeepSpeed's checkpoint
        tokenizer/           the tokenizer (in `model/` otherwise)

and the rest as above; a sharded checkpoint resumes on the same engine (the final model is gathered
into one Hugging Face directory when the run ends, see `rlhf.training.sharding`).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf.files import writing
from rlhf.models.adapters import find_peft_model
from rlhf.models.save import save_pretrained

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from; the message is one line naming it."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    directory = Path(run_dir) / CHECKPOINTS
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    accelerator,
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    tokenizer: Any,
    state: dict[str, Any],
    keep: int | None = None,
    extra: dict[str, Any] | None = None,
    prepared: torch.nn.Module | None = None,
) -> Path:
    """Write checkpoint `step` of the run (all processes call this); returns its directory.

    `state` must be JSON-serialisable; `extra` (tensors, optimizer states) goes to `extra.pt`.
    `prepared`: the model as Accelerate prepared it (`model` may be a part of it), which a sharded
    run's engine writes."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / checkpoint_name(step)
    # Every process must write into the same staging directory: the main one names it.
    token = [uuid.uuid4().hex[:8] if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(token)
    staging = root / f".{final.name}.tmp-{token[0]}"
    try:
        with writing(final):
            _write_files(
                accelerator,
                staging,
                step,
                state,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                tokenizer=tokenizer,
                extra=extra,
                prepared=prepared,
            )
    except BaseException:
        # A failed save (a full disk) leaves no half-written directory taking up the space; the
        # checkpoints saved before stay as they are.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # a checkpoint of this step from an earlier attempt: the new one wins
            shutil.rmtree(final)
        staging.rename(final)
        for stale in root.glob(".step-*.tmp-*"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        if keep is not None:
            for old in list_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _write_files(
    accelerator,
    staging: Path,
    step: int,
    state: dict[str, Any],
    *,
    model,
    optimizer,
    scheduler,
    tokenizer,
    extra: dict[str, Any] | None,
    prepared,
) -> None:
    """Every process's part of checkpoint `step`, into the `staging` directory."""
    from rlhf.training.sharding import SHARDED_DIR, is_sharded, save_sharded

    sharded = is_sharded(accelerator)
    if accelerator.is_main_process:
        (staging / "rng").mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), staging / "rng" / f"rank-{accelerator.process_index}.pt")
    if sharded:
        save_sharded(
            accelerator, prepared if prepared is not None else model, optimizer, staging / SHARDED_DIR
        )
    if accelerator.is_main_process:
        if not sharded:
            save_pretrained(accelerator.unwrap_model(model), staging / "model")
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        if tokenizer is not None:
            tokenizer.save_pretrained(staging / ("tokenizer" if sharded else "model"))
        if scheduler is not None:
            torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        if extra is not None:
            torch.save(extra, staging / "extra.pt")
        full_state = {"step": step, "num_processes": accelerator.num_processes, **state}
        (staging / "trainer_state.json").write_text(json.dumps(full_state, indent=1) + "\n", encoding="utf-8")


def check_fresh_start(run_dir: str | Path, *, resume: str | Path | bool | None, overwrite: bool) -> None:
    """Before a run writes anything into `run_dir`: a run that does not resume must not silently
    overwrite the checkpoints an earlier run left there. Without `resume` they are refused in one
    line (`CheckpointError`) unless `overwrite`, which (with `start_fresh`) deletes them."""
    if resume:
        return
    found = list_checkpoints(run_dir)
    if not found or overwrite:
        return
    summary = Path(run_dir) / "summary.json"
    finished = summary.is_file() and summary.stat().st_mtime >= found[-1].stat().st_mtime
    if finished:
        raise CheckpointError(
            f"{run_dir} holds the checkpoints of a finished run (newest {found[-1].name}): start over with "
            "--overwrite (deletes them), or give another output_dir"
        )
    raise CheckpointError(
        f"{run_dir} holds the checkpoints of an unfinished run (newest {found[-1].name}): continue it with "
        "--resume, or start over with --overwrite (deletes them)"
    )


def start_fresh(run_dir: str | Path) -> None:
    """Clear what an earlier run left in `run_dir` that a fresh run would mix with its own: its
    checkpoints, metrics.jsonl and TensorBoard events (main process only)."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)


def load_checkpoint(
    accelerator,
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    prepared: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Restore weights, optimizer, schedule and this process's RNG from `path`; returns its state."""
    from rlhf.training.sharding import SHARDED_DIR, is_sharded, load_sharded, sharding_kind

    path = Path(path)
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no trainer_state.json)")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if is_sharded(accelerator) != (path / SHARDED_DIR).is_dir():
        written = "a sharded (FSDP or DeepSpeed)" if (path / SHARDED_DIR).is_dir() else "an unsharded"
        raise CheckpointError(
            f"{path} was written by {written} run; this run is on {sharding_kind(accelerator)}: resume on the same engine"
        )
    if is_sharded(accelerator):
        load_sharded(accelerator, prepared if prepared is not None else model, optimizer, path / SHARDED_DIR)
    else:
        load_trainable_weights(accelerator.unwrap_model(model), path / "model")
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    if scheduler is not None and (path / "scheduler.pt").is_file():
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng_file = path / "rng" / f"rank-{accelerator.process_index}.pt"
    if state.get("num_processes") == accelerator.num_processes and rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    # With another number of processes the data order still resumes exactly (it depends only on
    # the seed and the position); only dropout masks differ from the uninterrupted run.
    return state


@dataclass
class ResumeState:
    """Where a resumed run picks up (all zeros and empty for a fresh run)."""

    step: int = 0
    """Optimizer steps already taken."""
    history: list[dict] = field(default_factory=list)
    """The per-step metric rows so far."""
    evals: list[dict] = field(default_factory=list)
    """The evaluations so far."""
    state: dict[str, Any] = field(default_factory=dict)
    """The checkpoint's whole `trainer_state.json`."""
    extra: dict[str, Any] | None = None
    """The checkpoint's `extra.pt`, when it has one."""


def resume_run(
    accelerator,
    run_dir: str | Path,
    resume: str | Path | bool | None,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: dict[str, Any],
    say: Callable[..., None] = print,
    require: tuple[str, ...] = (),
    prepared: torch.nn.Module | None = None,
) -> ResumeState:
    """Restore a run: `resume` True takes the newest checkpoint of `run_dir` (a fresh start when
    there is none), a path takes that checkpoint, None/False starts fresh.

    Warns about config fields that differ from the checkpoint's (other than `logging`), and drops
    the metric rows the interrupted run logged after the checkpoint, so each step is logged once.
    `require`: files a stage needs in the checkpoint (e.g. `extra.pt`); a checkpoint without one
    is refused before anything is loaded or trimmed.
    """
    from rlhf.tracking.metrics import truncate_metrics

    path = latest_checkpoint(run_dir) if resume is True else (Path(resume) if resume else None)
    if path is None:
        if resume is True:
            say(f"[resume] no checkpoint in {Path(run_dir) / CHECKPOINTS}: starting from step 0")
        return ResumeState()
    missing = [name for name in require if not (path / name).is_file()]
    if missing and (path / "trainer_state.json").is_file():
        raise CheckpointError(f"{path} has no {', '.join(missing)}: not a checkpoint of this stage")
    state = load_checkpoint(
        accelerator, path, model=model, optimizer=optimizer, scheduler=scheduler, prepared=prepared
    )
    for line in config_changes(state.get("config", {}), config):
        say(f"[resume] warning: {line}")
    if accelerator.is_main_process:
        truncate_metrics(run_dir, state["step"])
    say(f"[resume] from {path} at step {state['step']}")
    extra_file = path / "extra.pt"
    extra = torch.load(extra_file, map_location="cpu", weights_only=False) if extra_file.is_file() else None
    return ResumeState(state["step"], state.get("history", []), state.get("evals", []), state, extra)


def config_changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """`key was A in the checkpoint, now B` for every field that differs (logging settings aside:
    where and how often a run logs does not change what it computes)."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        if not prefix and key == "logging":
            continue
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            lines += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            lines.append(f"{prefix}{key} was {old!r} in the checkpoint, now {new!r}")
    return lines


def load_trainable_weights(model: torch.nn.Module, directory: Path) -> None:
    """Put the weights saved in `directory` (by `save_pretrained`) back into `model`.

    An adapter directory restores the adapter (and `modules_to_save`); a full model directory
    restores every tensor it holds. Every trainable parameter must be covered, or this raises.
    """
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no weights (*.safetensors) in {directory}")
    peft_model = find_peft_model(model)
    if peft_model is not None:
        from peft import set_peft_model_state_dict

        weights = load_file(directory / "adapter_model.safetensors")
        result = set_peft_model_state_dict(peft_model, weights)
    else:
        weights = {}
        for file in files:
            weights.update(load_file(file))
        result = model.load_state_dict(weights, strict=False)
    params = dict(model.named_parameters())
    missing = [k for k in result.missing_keys if k in params and params[k].requires_grad]  # type: ignore[attr-defined]  # peft annotates less than it returns
    if missing:
        raise CheckpointError(f"checkpoint {directory} lacks trainable weights, e.g. {missing[:3]}")


def _rng_state() -> dict[str, Any]:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
