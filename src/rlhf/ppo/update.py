"""One PPO step after sampling: advantages from the scored rollout, then epochs of clipped updates.

Distributed runs: every quantity that is a mean over the rollout (whitening statistics, the
token count a minibatch's loss is divided by, the REINFORCE baseline) is taken over all processes,
so N processes with rollouts of R/N sequences compute what one process with R would.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.losses import ppo as F
from rlhf.ppo.config import PpoConfig
from rlhf.ppo.rollout import Rollout, collate


@dataclass
class Models:
    """What the update trains, as Accelerate prepared it."""

    policy: torch.nn.Module
    """The `PolicyValue` (DDP-wrapped in a multi-process run)."""
    critic: torch.nn.Module | None
    """A separate critic (`ScalarModel`), or None (shared head or no critic)."""
    policy_optimizer: Any
    value_optimizer: Any | None
    policy_scheduler: Any
    value_scheduler: Any | None
    policy_params: list[torch.nn.Parameter]
    value_params: list[torch.nn.Parameter]
    pad_id: int


@dataclass
class UpdateState:
    """What the update carries from step to step (checkpointed)."""

    baseline: F.MovingBaseline
    skipped: int = 0
    """Updates skipped for a NaN/inf loss, reward or gradient so far."""
    ptx_position: int = 0
    """PPO-ptx batches consumed so far."""


class NonFiniteError(RuntimeError):
    """Too many NaN/inf losses or rewards: the run stops."""


def compute_advantages(
    rollout: Rollout, cfg: PpoConfig, beta: float, state: UpdateState, *, reduce_sum, gather, rank: int = 0
) -> dict[str, float]:
    """Fill `rollout.advantages` (and `returns` with a critic); returns KL metrics of the rollout."""
    mask = rollout.mask
    kl = F.kl_per_token(rollout.logprobs, rollout.ref_logprobs, cfg.kl.estimator) * mask  # (R, N)
    seq_kl = kl.sum(1)  # (R,)
    in_reward = cfg.kl.placement == "reward"
    estimator = cfg.advantage.estimator
    if estimator == "gae":
        rewards = F.token_rewards(rollout.scores, kl if in_reward else torch.zeros_like(kl), mask, beta)
        rollout.advantages, rollout.returns = F.gae(
            rewards, rollout.values, mask, cfg.advantage.gamma, cfg.advantage.lam
        )
    else:
        seq = rollout.scores - beta * seq_kl if in_reward else rollout.scores
        if estimator == "reinforce":
            # The baseline is a mean over the whole step's rollout, identical on every process.
            everything = gather(seq)  # (R x processes,) in rank order
            seq_adv = state.baseline.advantages(everything)[rank * len(seq) : (rank + 1) * len(seq)]
        elif estimator == "rloo":
            seq_adv = F.rloo_advantages(seq, cfg.rollout.completions_per_prompt)
        else:
            seq_adv = F.grpo_advantages(
                seq, cfg.rollout.completions_per_prompt, scale=cfg.advantage.grpo_scale
            )
        rollout.advantages = F.broadcast_to_tokens(seq_adv, mask)
        rollout.returns = None
    if cfg.advantage.whiten:
        rollout.advantages = F.masked_whiten(rollout.advantages, mask, reduce_sum=reduce_sum)
    totals = reduce_sum(torch.stack([seq_kl.sum(), torch.tensor(float(len(rollout)))]).double())
    return {"kl": float(totals[0] / totals[1])}


def ppo_update(
    accelerator,
    models: Models,
    rollout: Rollout,
    cfg: PpoConfig,
    beta: float,
    state: UpdateState,
    *,
    warmup: bool,
    ptx_batches=None,
    say=print,
) -> dict[str, float]:
    """`cfg.ppo_epochs` passes of minibatch updates over `rollout`; returns the step's mean losses
    and statistics. `warmup`: train only the critic (the policy's parameters do not move)."""
    reduce_sum = make_reduce_sum(accelerator)
    device = accelerator.device
    r, mb = len(rollout), cfg.minibatch_size
    accumulation = cfg.optimizer.gradient_accumulation_steps
    micro = mb // accumulation
    sums: dict[str, float] = {}
    updates = 0
    stopped_early = False
    models.policy.train()
    for _epoch in range(cfg.ppo_epochs):
        order = torch.randperm(r).tolist()
        for start in range(0, r, mb):
            indices = order[start : start + mb]
            tokens = float(reduce_sum(rollout.mask[indices].sum().double().reshape(1))[0])
            bad = torch.zeros(1, dtype=torch.float64)
            stats_sum: dict[str, float] = {}
            for m in range(accumulation):
                idx = indices[m * micro : (m + 1) * micro]
                last = m == accumulation - 1
                ptx = next(ptx_batches) if (ptx_batches is not None and last) else None
                with _no_sync(accelerator, models, sync=last):
                    loss, stats = _micro_loss(models, rollout, idx, cfg, beta, tokens, warmup, device, ptx)
                    if not torch.isfinite(loss):
                        bad += 1
                    accelerator.backward(loss * accelerator.num_processes)
                for key, value in stats.items():
                    stats_sum[key] = stats_sum.get(key, 0.0) + value
            if ptx is not None:
                state.ptx_position += 1
            norms = _clip(accelerator, models, cfg)
            bad += sum(0 if math.isfinite(v) else 1 for v in norms.values())
            if float(reduce_sum(bad)[0]) > 0:
                _zero(models)
                state.skipped += 1
                say(f"[guard] warning: non-finite loss or gradient, update skipped ({state.skipped} so far)")
                if state.skipped > cfg.guards.max_nonfinite:
                    raise NonFiniteError(nonfinite_message(state.skipped, cfg))
                continue
            if not warmup:
                models.policy_optimizer.step()
                models.policy_scheduler.step()
            if models.value_optimizer is not None:
                models.value_optimizer.step()
                models.value_scheduler.step()
            _zero(models)
            updates += 1
            # Micro-batch stats are token-weighted shares of the minibatch on all processes: add them up.
            reduced = reduce_sum(torch.tensor(list(stats_sum.values()), dtype=torch.float64))
            minibatch = dict(zip(stats_sum, reduced.tolist()))
            for key, value in {**minibatch, **norms}.items():
                sums[key] = sums.get(key, 0.0) + value
            if cfg.loss.target_kl is not None and minibatch["approx_kl"] > cfg.loss.target_kl:
                stopped_early = True  # the same value on every process, so all stop together
                break
        if stopped_early:
            break
    out = {k: v / max(updates, 1) for k, v in sums.items()}
    out.update(updates=updates, early_stop=float(stopped_early))
    return out


def _micro_loss(models: Models, rollout: Rollout, idx, cfg: PpoConfig, beta, tokens, warmup, device, ptx):
    """The loss of micro-batch `idx` as its share of the minibatch's token mean, and its stats."""
    batch = collate(
        [rollout.query[i] for i in idx], [rollout.response[i] for i in idx], models.pad_id, device
    )
    n = batch["response"].shape[1]
    mask = batch["mask"]

    def old(t):
        return t[idx, :n].to(device)

    out = models.policy(
        batch["input_ids"], batch["attention_mask"], batch["response"],
        entropy="grad" if cfg.loss.entropy_coef and not warmup else True,
        values=models.critic is None, detach_values=warmup, ptx=ptx,
    )  # fmt: skip
    adv = old(rollout.advantages)
    policy_loss, pstats = F.policy_loss(
        out.logprobs, old(rollout.logprobs), adv, mask, cfg.loss.clip_eps, denominator=tokens
    )
    share = float(mask.sum()) / tokens
    stats = {
        "approx_kl": pstats["approx_kl"] * share, "clip_frac": pstats["clip_frac"] * share,
        "entropy": float(F.masked_sum(out.entropy.detach(), mask)) / tokens,
    }  # fmt: skip
    loss = policy_loss * 0.0 if warmup else policy_loss
    stats["policy_loss"] = float(policy_loss.detach())
    if cfg.uses_critic:
        if models.critic is not None:
            from rlhf.ppo.policy import critic_values

            values = critic_values(models.critic, batch["input_ids"], batch["attention_mask"], n).float()
        else:
            values = out.values
        vloss, vstats = F.value_loss(
            values, old(rollout.values), old(rollout.returns), mask, cfg.loss.value_clip, denominator=tokens
        )
        loss = loss + cfg.loss.value_coef * vloss
        stats["value_loss"] = float(vloss.detach())
        stats["value_clip_frac"] = vstats["value_clip_frac"] * share
    if cfg.loss.entropy_coef and not warmup:
        loss = loss - cfg.loss.entropy_coef * F.masked_sum(out.entropy, mask) / tokens
    if cfg.kl.placement == "loss" and beta and not warmup:
        kl = F.kl_per_token(out.logprobs, old(rollout.ref_logprobs), cfg.kl.estimator)
        kl_term = F.masked_sum(kl, mask) / tokens
        loss = loss + beta * kl_term
        stats["kl_loss"] = float(kl_term.detach())
    if ptx is not None:
        ptx_loss = out.ptx_nll / max(ptx["count"], 1)
        if not warmup:
            loss = loss + cfg.loss.ptx_coef * ptx_loss
        stats["ptx_loss"] = float(ptx_loss.detach())
    if warmup:
        loss = loss + out.logprobs.sum() * 0.0  # every policy parameter takes part (DDP), with zero gradient
    return loss, stats


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
    norms = {}
    limit = cfg.optimizer.max_grad_norm
    for name, params in (("grad_norm", models.policy_params), ("value_grad_norm", models.value_params)):
        if not params:
            continue
        if limit is not None:
            norms[name] = float(accelerator.clip_grad_norm_(params, limit))
        else:
            grads = [p.grad.norm() for p in params if p.grad is not None]
            norms[name] = float(torch.stack(grads).norm()) if grads else 0.0
    return norms


def _zero(models: Models) -> None:
    models.policy_optimizer.zero_grad(set_to_none=True)
    if models.value_optimizer is not None:
        models.value_optimizer.zero_grad(set_to_none=True)


def make_reduce_sum(accelerator):
    """`reduce_sum(t)`: `t` summed over processes (itself with one), back on the CPU."""

    def reduce_sum(t: torch.Tensor) -> torch.Tensor:
        if accelerator.num_processes == 1:
            return t
        return accelerator.reduce(t.to(accelerator.device), reduction="sum").cpu()

    return reduce_sum


def nonfinite_message(skipped: int, cfg: PpoConfig) -> str:
    return (
        f"{skipped} updates had a NaN or infinite loss, reward or gradient (limit `guards.max_nonfinite` "
        f"{cfg.guards.max_nonfinite}); the run stops. Usual causes: a learning rate too high "
        f"(optimizer.lr {cfg.optimizer.lr}), fp16 overflow (try bf16 or float32), or a reward source "
        "returning NaN"
    )
