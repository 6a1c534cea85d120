"""PPO checkpoints on the shared format (`rlhf.training.checkpoint`): the policy (or its adapter),
its optimizer and schedule, and RNG states as every stage; in `extra.pt` the critic (value head or
separate model) with its optimizer and schedule, the KL controller, the REINFORCE baseline, the
reward sources' running statistics and the skip and PPO-ptx counters."""

from __future__ import annotations

from rlhf.config.core import to_dict


def save(
    accelerator,
    run_dir,
    step,
    cfg,
    policy,
    critic_w,
    models,
    kl_ctl,
    state,
    reward_fn,
    history,
    tokenizer,
    say,
):
    """Write checkpoint `step` (all processes call this)."""
    from rlhf.ppo.setup import value_state
    from rlhf.training.checkpoint import save_checkpoint

    critic = accelerator.unwrap_model(critic_w) if critic_w is not None else None
    extra = {
        "value": value_state(policy, critic),
        "value_optimizer": models.value_optimizer.state_dict()
        if models.value_optimizer is not None
        else None,
        "value_scheduler": models.value_scheduler.state_dict()
        if models.value_scheduler is not None
        else None,
        "kl_controller": kl_ctl.state_dict(),
        "baseline": state.baseline.state_dict(),
        "reward": reward_fn.state_dict(),
        "skipped": state.skipped,
        "ptx_position": state.ptx_position,
    }
    path = save_checkpoint(
        accelerator, run_dir, step, model=policy.lm, optimizer=models.policy_optimizer,
        scheduler=models.policy_scheduler, tokenizer=tokenizer,
        state={"history": history, "config": to_dict(cfg)}, keep=cfg.keep_checkpoints, extra=extra,
    )  # fmt: skip
    say(f"[checkpoint] saved {path}", flush=True)


def restore(accelerator, run_dir, resume, cfg, policy, critic_w, models, kl_ctl, state, reward_fn, say):
    """Load the checkpoint `resume` names (see `resume_run`); returns (step, history)."""
    from rlhf.ppo.setup import load_value_state
    from rlhf.training.checkpoint import resume_run

    resumed = resume_run(
        accelerator, run_dir, resume, model=policy.lm, optimizer=models.policy_optimizer,
        scheduler=models.policy_scheduler, config=to_dict(cfg), say=say,
        require=("extra.pt",),  # critic, KL state: checked before the run's metrics are trimmed
    )  # fmt: skip
    if resumed.step == 0:
        return 0, []
    extra = resumed.extra  # present: `require` refused a checkpoint without it
    critic = accelerator.unwrap_model(critic_w) if critic_w is not None else None
    if extra["value"]:
        load_value_state(policy, critic, extra["value"])
    if models.value_optimizer is not None and extra["value_optimizer"] is not None:
        models.value_optimizer.load_state_dict(extra["value_optimizer"])
        models.value_scheduler.load_state_dict(extra["value_scheduler"])
    kl_ctl.load_state_dict(extra["kl_controller"])
    state.baseline.load_state_dict(extra["baseline"])
    reward_fn.load_state_dict(extra["reward"])
    state.skipped, state.ptx_position = extra["skipped"], extra["ptx_position"]
    return resumed.step, resumed.history
