"""PPO checkpoints on the shared format (`rlhf.training.checkpoint`): the policy (or its adapter),
its optimizer and schedule, and RNG states as every stage; in `extra.pt` the critic (value head or
separate model) with its optimizer and schedule, the KL controller, the REINFORCE baseline, the
reward sources' running statistics and the skip and PPO-ptx counters."""

from __future__ import annotations

from pathlib import Path

from rlhf.config.core import to_dict
from rlhf.ppo.run_state import PpoRun


def _optimizers(run: PpoRun):
    """What a checkpoint's optimizer state is: the policy's optimizer; under sharding (where the
    value head is part of the sharded policy and is saved with it) with the value head's."""
    from rlhf.training.sharding import is_sharded

    models = run.models
    if is_sharded(run.accelerator) and models.value_optimizer is not None:
        return [models.policy_optimizer, models.value_optimizer]
    return models.policy_optimizer


def save(run: PpoRun, step: int) -> Path:
    """Write checkpoint `step` (all processes call this); returns its directory."""
    from rlhf.ppo.setup import value_state
    from rlhf.training.checkpoint import save_checkpoint
    from rlhf.training.sharding import is_sharded

    models, state = run.models, run.state
    whole = not is_sharded(run.accelerator)  # else the value head and its optimizer are in the shards
    extra = {
        "value": value_state(run.policy, run.critic) if whole else {},
        "value_optimizer": models.value_optimizer.state_dict()
        if models.value_optimizer is not None and whole
        else None,
        "value_scheduler": models.value_scheduler.state_dict()
        if models.value_scheduler is not None
        else None,
        "kl_controller": run.kl_ctl.state_dict(),
        "baseline": state.baseline.state_dict(),
        "reward": run.reward_fn.state_dict(),
        "skipped": state.guard.skipped,
        "ptx_position": state.ptx_position,
    }
    path = save_checkpoint(
        run.accelerator, run.run_dir, step, model=run.policy.lm, optimizer=_optimizers(run),
        scheduler=models.policy_scheduler, tokenizer=run.tokenizer,
        state={"history": run.history, "config": to_dict(run.cfg)}, keep=run.cfg.keep_checkpoints, extra=extra,
        prepared=models.policy,
    )  # fmt: skip
    run.say(f"[checkpoint] saved {path}", flush=True)
    return path


def restore(run: PpoRun, resume: str | bool | None) -> int:
    """Load the checkpoint `resume` names (see `resume_run`) into `run`; returns the step it was
    saved at (0: a fresh start), with `run.history` holding the steps before it."""
    from rlhf.ppo.setup import load_value_state
    from rlhf.training.checkpoint import resume_run

    models, state = run.models, run.state
    resumed = resume_run(
        run.accelerator, run.run_dir, resume, model=run.policy.lm, optimizer=_optimizers(run),
        scheduler=models.policy_scheduler, config=to_dict(run.cfg), say=run.say,
        require=("extra.pt",),  # critic, KL state: checked before the run's metrics are trimmed
        prepared=models.policy,
    )  # fmt: skip
    if resumed.step == 0:
        return 0
    extra = resumed.extra
    assert extra is not None  # `require` refused a checkpoint without it
    if extra["value"]:
        load_value_state(run.policy, run.critic, extra["value"])
    if models.value_optimizer is not None and extra["value_optimizer"]:
        models.value_optimizer.load_state_dict(extra["value_optimizer"])
    if models.value_scheduler is not None and extra["value_scheduler"]:
        models.value_scheduler.load_state_dict(extra["value_scheduler"])
    run.kl_ctl.load_state_dict(extra["kl_controller"])
    state.baseline.load_state_dict(extra["baseline"])
    run.reward_fn.load_state_dict(extra["reward"])
    state.guard.skipped, state.ptx_position = extra["skipped"], extra["ptx_position"]
    run.history[:] = resumed.history
    return resumed.step
