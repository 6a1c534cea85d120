"""One PPO step's update: `ppo_epochs` passes of clipped policy and value updates over minibatches
of the step's `Experience`.

Distributed runs: the token count a minibatch's loss is divided by is taken over all processes, and
micro-batch statistics are token-weighted shares of the minibatch, so N processes with R/N
sequences each compute what one process with R would.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.losses import ppo as ppo_losses
from rlhf.ppo.config import PpoConfig
from rlhf.ppo.experience import Experience
from rlhf.ppo.rollout import collate
from rlhf.ppo.run_state import Models, PpoRun


@dataclass
class MicroStep:
    """What every micro-batch of one minibatch shares."""

    models: Models
    """What the update trains (policy, critic, optimizers)."""
    cfg: PpoConfig
    """The run's config (loss coefficients, clipping, KL placement)."""
    experience: Experience
    """The step's experience the micro-batches index into."""
    beta: float
    """The KL coefficient of this step."""
    warmup: bool
    """Critic warm-up: only the critic learns."""
    tokens: float
    """Response tokens of the minibatch over all processes: every micro-batch loss is its share."""
    device: Any
    """Where the micro-batches are computed."""


def ppo_update(
    run: PpoRun, exp: Experience, beta: float, *, warmup: bool, ptx_batches=None
) -> dict[str, float]:
    """`cfg.ppo_epochs` passes of minibatch updates over `exp`; returns the step's mean losses and
    statistics. `warmup`: train only the critic (the policy's parameters do not move)."""
    cfg, models = run.cfg, run.models
    r, mb = len(exp), cfg.minibatch_size
    sums: dict[str, float] = {}
    updates = 0
    stopped_early = False
    models.policy.train()
    for _epoch in range(cfg.ppo_epochs):
        order = torch.randperm(r).tolist()
        for start in range(0, r, mb):
            indices = order[start : start + mb]
            tokens = float(run.reduce_sum(exp.mask[indices].sum().double().reshape(1))[0])
            step = MicroStep(models, cfg, exp, beta, warmup, tokens, run.accelerator.device)
            minibatch = _minibatch(run, step, indices, ptx_batches)
            if minibatch is None:
                continue
            updates += 1
            for key, value in minibatch.items():
                sums[key] = sums.get(key, 0.0) + value
            if cfg.loss.target_kl is not None and minibatch["approx_kl"] > cfg.loss.target_kl:
                stopped_early = True  # the same value on every process, so all stop together
                break
        if stopped_early:
            break
    out = {k: v / max(updates, 1) for k, v in sums.items()}
    out.update(updates=updates, early_stop=float(stopped_early))
    return out


def _minibatch(run: PpoRun, step: MicroStep, indices: list[int], ptx_batches) -> dict[str, float] | None:
    """Accumulate the minibatch's micro-batches and step the optimizers; its statistics over all
    processes, or None when a NaN/inf loss or gradient skipped it."""
    from rlhf.training.sharding import is_deepspeed

    accelerator, models, cfg = run.accelerator, step.models, step.cfg
    accumulation = cfg.optimizer.gradient_accumulation_steps
    micro = len(indices) // accumulation
    bad = torch.zeros(1, dtype=torch.float64)
    stats_sum: dict[str, float] = {}
    ptx = None
    deepspeed = is_deepspeed(accelerator)
    if deepspeed and step.warmup:  # one optimizer: critic warm-up holds the policy's groups still
        models.policy_scheduler.hold()
    elif deepspeed:
        models.policy_scheduler.release()
    for m in range(accumulation):
        last = m == accumulation - 1
        ptx = next(ptx_batches) if (ptx_batches is not None and last) else None
        with _no_sync(accelerator, models, sync=last):
            loss, stats = _micro_loss(step, indices[m * micro : (m + 1) * micro], ptx)
            if not torch.isfinite(loss):
                bad += 1
            if deepspeed:
                _deepspeed_backward(run, loss, bad, last=last)
            else:
                accelerator.backward(loss * accelerator.num_processes)
        for key, value in stats.items():
            stats_sum[key] = stats_sum.get(key, 0.0) + value
    if ptx is not None:
        run.state.ptx_position += 1
    norms = _deepspeed_norm(run) if deepspeed else _clip(accelerator, models, cfg)
    bad += sum(0 if math.isfinite(v) else 1 for v in norms.values())
    if float(run.reduce_sum(bad)[0]) > 0:
        _zero(models)
        run.state.guard.skip("a NaN or infinite loss or gradient in an update", run.say)
        return None
    if not step.warmup:
        models.policy_optimizer.step()
        models.policy_scheduler.step()
    if models.value_optimizer is not None:
        models.value_optimizer.step()
    if models.value_scheduler is not None:
        models.value_scheduler.step()
    _zero(models)
    # Micro-batch stats are token-weighted shares of the minibatch on all processes: add them up.
    reduced = run.reduce_sum(torch.tensor(list(stats_sum.values()), dtype=torch.float64))
    return {**dict(zip(stats_sum, reduced.tolist())), **norms}


def _micro_loss(step: MicroStep, idx: list[int], ptx: dict | None) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of micro-batch `idx` as its share of the minibatch's token mean, and its stats."""
    cfg, exp, models, tokens, warmup = step.cfg, step.experience, step.models, step.tokens, step.warmup
    batch = collate([exp.query[i] for i in idx], [exp.response[i] for i in idx], models.pad_id, step.device)
    n = batch["response"].shape[1]
    mask = batch["mask"]  # (b, n)

    def old(t: torch.Tensor) -> torch.Tensor:
        return t[idx, :n].to(step.device)  # (b, n)

    out = models.policy(
        batch["input_ids"], batch["attention_mask"], batch["response"],
        entropy="grad" if cfg.loss.entropy_coef and not warmup else True,
        values=models.critic is None, detach_values=warmup, ptx=ptx,
    )  # fmt: skip
    weights = None
    if cfg.rollout.tis_cap is not None and exp.engine_logprobs is not None:
        weights = ppo_losses.tis_weights(old(exp.logprobs), old(exp.engine_logprobs), cfg.rollout.tis_cap)
    policy_loss, pstats = ppo_losses.policy_loss(
        out.logprobs, old(exp.logprobs), old(exp.advantages), mask, cfg.loss.clip_eps, denominator=tokens,
        token_weights=weights,
    )  # fmt: skip
    share = float(mask.sum()) / tokens
    stats = {
        "approx_kl": pstats["approx_kl"] * share, "clip_frac": pstats["clip_frac"] * share,
        "entropy": float(ppo_losses.masked_sum(out.entropy.detach(), mask)) / tokens,
    }  # fmt: skip
    loss = policy_loss * 0.0 if warmup else policy_loss
    stats["policy_loss"] = float(policy_loss.detach())
    if cfg.uses_critic:
        loss = loss + _value_term(step, batch, out, old, stats)
    if cfg.loss.entropy_coef and not warmup:
        loss = loss - cfg.loss.entropy_coef * ppo_losses.masked_sum(out.entropy, mask) / tokens
    if cfg.kl_placement == "loss" and step.beta and not warmup:
        kl = ppo_losses.kl_per_token(out.logprobs, old(exp.ref_logprobs), cfg.kl_estimator)
        kl_term = ppo_losses.masked_sum(kl, mask) / tokens
        loss = loss + step.beta * kl_term
        stats["kl_loss"] = float(kl_term.detach())
    if ptx is not None:
        ptx_loss = out.ptx_nll / max(ptx["count"], 1)
        if not warmup:
            loss = loss + cfg.loss.ptx_coef * ptx_loss
        stats["ptx_loss"] = float(ptx_loss.detach())
    if warmup:
        loss = loss + out.logprobs.sum() * 0.0  # every policy parameter takes part (DDP), with zero gradient
    return loss, stats


def _value_term(
    step: MicroStep, batch: dict[str, torch.Tensor], out, old, stats: dict[str, float]
) -> torch.Tensor:
    """value_coef x the clipped value loss of the micro-batch (its share of the minibatch); adds its stats."""
    cfg, exp, models = step.cfg, step.experience, step.models
    assert exp.values is not None and exp.returns is not None, "a critic's experience has values and returns"
    n, mask = batch["response"].shape[1], batch["mask"]
    if models.critic is not None:
        from rlhf.ppo.policy import critic_values

        values = critic_values(models.critic, batch["input_ids"], batch["attention_mask"], n).float()
    else:
        values = out.values
    vloss, vstats = ppo_losses.value_loss(
        values, old(exp.values), old(exp.returns), mask, cfg.loss.value_clip, denominator=step.tokens
    )
    stats["value_loss"] = float(vloss.detach())
    stats["value_clip_frac"] = vstats["value_clip_frac"] * float(mask.sum()) / step.tokens
    return cfg.loss.value_coef * vloss


@contextlib.contextmanager
def _no_sync(accelerator, models: Models, *, sync: bool):
    """Skip DDP's gradient all-reduce on every micro-batch but a minibatch's last."""
    with contextlib.ExitStack() as stack:
        if not sync:
            stack.enter_context(accelerator.no_sync(models.policy))
            if models.critic is not None:
                stack.enter_context(accelerator.no_sync(models.critic))
        yield


def _clip(accelerator, models: Models, cfg: PpoConfig) -> dict[str, float]:
    """Clip policy and critic gradients separately; returns their norms (before clipping)."""
    from rlhf.training.sharding import clip_grad_norm, is_fsdp

    norms = {}
    limit = cfg.optimizer.max_grad_norm
    for name, params in (("grad_norm", models.policy_params), ("value_grad_norm", models.value_params)):
        if not params:
            continue
        if limit is not None or is_fsdp(accelerator):  # FSDP2: the norm over every process's shards
            norms[name] = float(clip_grad_norm(accelerator, params, limit if limit is not None else math.inf))
        else:
            grads = [p.grad.norm() for p in params if p.grad is not None]
            norms[name] = float(torch.stack(grads).norm()) if grads else 0.0
    return norms


def _deepspeed_backward(run: PpoRun, loss: torch.Tensor, bad: torch.Tensor, *, last: bool) -> None:
    """Backward through the DeepSpeed engine, which reduces the gradients and steps the optimizer
    (clipping them) inside the backward of the minibatch's last micro-batch: marked as its
    accumulation boundary here. A NaN or infinite loss on any process stops the run before it
    reaches the weights (the micro-batches before it are already in the engine's buffers, so the
    minibatch cannot be skipped as on other engines)."""
    if float(run.reduce_sum(bad)[0]) > 0:
        raise run.state.guard.unskippable(
            "a NaN or infinite PPO loss under DeepSpeed, whose engine steps inside the backward pass"
        )
    engine = run.accelerator.deepspeed_engine_wrapped
    engine.backward(loss * run.accelerator.num_processes, sync_gradients=last)


def _deepspeed_norm(run: PpoRun) -> dict[str, float]:
    """The gradient norm DeepSpeed clipped (policy and value head together) in the step it just took;
    a non-finite one stops the run (the step is taken), except under fp16, whose loss scaler skipped
    it and lowered the scale."""
    norm = run.accelerator.deepspeed_engine_wrapped.get_global_grad_norm()
    norm = float(norm) if norm is not None else 0.0
    if not math.isfinite(norm):
        if run.accelerator.mixed_precision == "fp16":
            return {}
        raise run.state.guard.unskippable(
            "a NaN or infinite gradient under DeepSpeed, whose engine steps inside the backward pass"
        )
    return {"grad_norm": norm}


def _zero(models: Models) -> None:
    models.policy_optimizer.zero_grad(set_to_none=True)
    if models.value_optimizer is not None:
        models.value_optimizer.zero_grad(set_to_none=True)
