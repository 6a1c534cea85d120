"""PPO and critic-free policy-gradient math over response tokens: plain tensor functions.

Shapes: per-token tensors are (B, T) over the response tokens only; `mask` (B, T), bool or 0/1
float, marks the real tokens. Rows are right-padded (a row's real tokens are a prefix), and
padded entries may hold anything (even inf or NaN): every function here selects with the mask
rather than multiplying by it, and padded outputs are 0.

- Masked statistics: `masked_sum`, `masked_mean`, `masked_var`, `masked_whiten`.
- Rewards: with d = log π(y_t) − log π_ref(y_t), `kl_per_token` gives the estimators of Schulman
  (2020) of KL(π‖π_ref) for a sampled token: k1 = d, k2 = d²/2, k3 = e^−d − 1 + d (unbiased and
  ≥ 0). `token_rewards` turns them into r_t = −β·kl_t, plus the sequence score on the last token.
- Advantages, with a critic: `gae` (Schulman et al. 2016),
      δ_t = r_t + γ·V_{t+1}·m_{t+1} − V_t,   A_t = δ_t + γλ·m_{t+1}·A_{t+1},   R_t = A_t + V_t,
  the value after a row's last real token being 0 (the episode ends there).
- Advantages without a critic, one scalar per completion, over a flat (N,) = (P·K,) reward vector
  laid out prompt-major (the K completions of prompt 0, then those of prompt 1, ...):
  `rloo_advantages` (leave-one-out baseline), `grpo_advantages` (group-normalized),
  `MovingBaseline` (an exponential moving average of batch means), and `broadcast_to_tokens`.
- Losses, each returning (loss, stats) with a float32 scalar and a dict of Python floats:
  `policy_loss`, the clipped surrogate with ρ_t = exp(log π − log π_old),
      l_t = −min(ρ_t·A_t, clip(ρ_t, 1 − ε, 1 + ε)·A_t);
  `value_loss`, ½(V − R)² optionally clipped around the old values. Both reduce to the masked
  mean, or to Σ_masked l_t / denominator so that micro-batches of one minibatch, each divided by
  the minibatch's token count, add up to the minibatch's token mean.
- Diagnostics: `explained_variance` (the entropy is `rlhf.models.readout.entropy_from_logits`).
- KL coefficient: `FixedKLController` and `AdaptiveKLController` (Ziegler et al. 2019), built by
  `make_kl_controller`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3"]
"""Which per-token estimator of KL(π‖π_ref) `kl_per_token` returns."""


def _bool(mask: torch.Tensor) -> torch.Tensor:
    """The mask as bool (nonzero = real token)."""
    return mask if mask.dtype == torch.bool else mask != 0


def _select(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x on the masked entries, 0 elsewhere (unlike x·mask, a NaN or inf on padding does not leak)."""
    return torch.where(_bool(mask), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _count(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """The number of masked entries of x (mask broadcast to x), over `dim` or over everything."""
    m = _bool(mask).expand_as(x).to(x.dtype)
    return m.sum() if dim is None else m.sum(dim=dim)


# ---------------------------------------------------------------------------------------------
# Masked statistics


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ x over the masked entries: a scalar (dim None) or reduced over `dim`."""
    selected = _select(x, mask)
    return selected.sum() if dim is None else selected.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the masked entries: a scalar (dim None) or reduced over `dim`.

    No masked entry (overall, or in a slice along `dim`) gives 0, not NaN.
    """
    return masked_sum(x, mask, dim) / _count(x, mask, dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over all masked entries (a scalar).

    unbiased: divide by n − 1 (Bessel) rather than n. Fewer entries than the divisor needs (n = 0,
    or n = 1 when unbiased) give 0: no spread is measured, and whitening stays finite.
    """
    mean = masked_mean(x, mask)
    squares = masked_sum((x - mean) ** 2, mask)
    n = _count(x, mask)
    divisor = n - 1 if unbiased else n
    # Too few entries: the squares are all 0 (no entry, or one entry equal to the mean), and so is this.
    return squares / divisor.clamp(min=1)


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """(x − μ) / √(σ² + eps) with μ, σ² the mean and unbiased variance over the masked entries.

    shift_mean False adds μ back (rescales around the mean only, as for rewards whose sign
    matters). Padded entries are 0. The statistics are over the whole tensor, not per row.
    `reduce_sum(t)` sums a small tensor over processes (e.g. an all-reduce): the statistics are
    then those of the masked entries of every process, computed in float64.
    """
    if reduce_sum is None:
        mean = masked_mean(x, mask)
        var = masked_var(x, mask, unbiased=True)
    else:
        n, total = reduce_sum(torch.stack([_count(x, mask), masked_sum(x, mask)]).double())
        mean64 = total / n.clamp(min=1)
        squares = reduce_sum(masked_sum((x.double() - mean64) ** 2, mask).reshape(1))[0]
        mean, var = mean64.to(x.dtype), (squares / (n - 1).clamp(min=1)).to(x.dtype)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _select(whitened, mask)


# ---------------------------------------------------------------------------------------------
# Rewards


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from the sampled tokens' log-probabilities, (B, T).

    With d = logp − ref_logp: k1 = d (unbiased, can be negative), k2 = d²/2 (biased, ≥ 0),
    k3 = e^−d − 1 + d (unbiased, ≥ 0; e^−d is computed as expm1 for small d). Not masked; gradients
    flow through both inputs (detach them for a reward).
    """
    d = logp.float() - ref_logp.float()  # (B, T)
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d**2
    if estimator == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"KL estimator must be 'k1', 'k2' or 'k3', got {estimator!r}")


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) long: the position of each row's last masked token; ValueError for an empty row."""
    m = _bool(mask)  # (B, T)
    empty = ~m.any(dim=1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"rows {rows} have no response token in the mask")
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)  # (B, T)
    return torch.where(m, positions, -1).max(dim=1).values


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """Per-token rewards (B, T): −beta·kl on the masked tokens, plus each row's sequence score
    `scores` (B,) on its last masked token; 0 on padding.

    A row with no masked token has nowhere to put its score: ValueError.
    """
    last = _last_index(mask)  # (B,)
    rewards = _select(-beta * kl.float(), mask)  # (B, T)
    score = scores.to(device=rewards.device, dtype=rewards.dtype).reshape(-1, 1)  # (B, 1)
    return rewards.scatter_add(1, last.unsqueeze(1), score)


# ---------------------------------------------------------------------------------------------
# Advantages with a critic


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation: (advantages, returns), both (B, T), 0 on padding.

    Backward over T, vectorized over B, with m the mask:
        δ_t = r_t + γ·V_{t+1}·m_{t+1} − V_t,   A_t = δ_t + γλ·m_{t+1}·A_{t+1},   R_t = A_t + V_t,
    so the value after a row's last real token is 0 (terminal) and padding contributes nothing.
    γ = λ = 1 gives R_t = Σ_{s≥t} r_s. Computed without gradient: the results are regression
    targets and constant advantages.
    """
    m = _bool(mask)
    r = _select(rewards.float(), m)  # (B, T)
    v = _select(values.float(), m)  # (B, T)
    m = m.to(r.dtype)
    steps = r.shape[1]
    advantages = torch.zeros_like(r)
    next_value = torch.zeros_like(r[:, 0])  # (B,) V_{t+1}·m_{t+1}
    next_advantage = torch.zeros_like(r[:, 0])  # (B,) A_{t+1}·m_{t+1}
    for t in reversed(range(steps)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = advantage * m[:, t]
        next_value = v[:, t] * m[:, t]
        next_advantage = advantages[:, t]
    returns = (advantages + v) * m
    return advantages, returns


# ---------------------------------------------------------------------------------------------
# Losses


def _reduce(per_token: torch.Tensor, mask: torch.Tensor, denominator: float | None) -> torch.Tensor:
    """Masked mean of per-token losses, or their masked sum / denominator."""
    if denominator is None:
        return masked_mean(per_token, mask)
    if not float(denominator) > 0:
        raise ValueError(f"denominator must be > 0, got {denominator}")
    return masked_sum(per_token, mask) / float(denominator)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    denominator: float | None = None,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate loss over the masked tokens.

    logp (B, T) the current policy's log-probabilities of the sampled tokens (with gradient);
    old_logp, advantages (B, T) from the rollout (detached here). Per token, ρ = exp(logp − old_logp),
        l = −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) = max(−ρ·A, −clip(ρ)·A).
    loss: masked mean of l, or Σ_masked l / denominator (pass a minibatch's total token count to
    every micro-batch, and the micro-batch losses add up to the minibatch's mean).
    token_weights (B, T), detached: l is multiplied by them (the truncated importance weights of
    `tis_weights` when another engine sampled the tokens); None: 1.
    stats, masked means over this call's tokens (0 when there are none):
        clip_frac   fraction of tokens where the clipped term is strictly the one chosen
                    (|ρ − 1| > ε and clipping changed the value; such tokens get no gradient),
        approx_kl   mean of (ρ − 1) − log ρ, the k3 estimate of KL(π_old‖π),
        ratio_mean  mean ρ.
    """
    m = _bool(mask)
    # Padding is zeroed before exp, so a garbage log-probability there cannot overflow into NaN grads.
    log_ratio = _select(logp.float() - old_logp.detach().float(), m)  # (B, T)
    ratio = torch.exp(log_ratio)
    adv = _select(advantages.detach().float(), m)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)  # (B, T)
    if token_weights is not None:
        per_token = per_token * _select(token_weights.detach().float(), m)
    loss = _reduce(per_token, m, denominator)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((clipped > unclipped).float(), m).item(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, m).item(),
            "ratio_mean": masked_mean(ratio, m).item(),
        }
    return loss, stats


def tis_weights(old_logp: torch.Tensor, engine_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling: min(π_old / π_engine, cap) per token (B, T), detached.

    The tokens were drawn by an inference engine whose probabilities differ slightly from the
    trainer's (other kernels, other precision); weighting each token's loss by the ratio corrects
    the policy gradient for that, and the cap bounds the variance a rare token could add."""
    return torch.exp(old_logp.detach().float() - engine_logp.detach().float()).clamp(max=cap)


def engine_mismatch(
    old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """How far the sampling engine's log-probs (B, T) are from the trainer's on the sampled tokens:
    sums over the masked tokens (add them over processes, then divide by `tokens`).
        kl          Σ (log π_engine − log π_old): k1 estimate of KL(π_engine ‖ π_old) (the tokens
                    are the engine's samples)
        abs_diff    Σ |log π_engine − log π_old|
        max_diff    the largest |log π_engine − log π_old| (not a sum)
        tokens      the number of masked tokens"""
    m = _bool(mask)
    diff = _select(engine_logp.float() - old_logp.float(), m)
    return {
        "kl": diff.sum(), "abs_diff": diff.abs().sum(),
        "max_diff": diff.abs().max() if diff.numel() else torch.zeros(()), "tokens": m.sum().float(),
    }  # fmt: skip


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = None,
    denominator: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Value-head regression to the returns over the masked tokens.

    values (B, T) with gradient; old_values (rollout values) and returns (B, T) detached here.
    Unclipped (clip None): l = ½(V − R)². Clipped: V_c = V_old + clamp(V − V_old, −clip, clip) and
    l = ½·max((V − R)², (V_c − R)²), the pessimistic one (PPO2 value clipping).
    Reduction as in `policy_loss`. stats: `value_clip_frac`, the fraction of tokens whose clipped
    term is strictly larger (0 without clipping).
    """
    m = _bool(mask)
    v = _select(values.float(), m)  # (B, T)
    old = _select(old_values.detach().float(), m)
    target = _select(returns.detach().float(), m)
    error = (v - target) ** 2
    if clip is None:
        per_token = 0.5 * error
        clip_frac = 0.0
    else:
        v_clipped = old + torch.clamp(v - old, -clip, clip)
        error_clipped = (v_clipped - target) ** 2
        per_token = 0.5 * torch.maximum(error, error_clipped)
        with torch.no_grad():
            clip_frac = masked_mean((error_clipped > error).float(), m).item()
    return _reduce(per_token, m, denominator), {"value_clip_frac": clip_frac}


# ---------------------------------------------------------------------------------------------
# Diagnostics


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var[R − V] / Var[R] over the masked tokens (population variances), as a float.

    1 is a perfect critic, 0 no better than a constant, negative worse. NaN when Var[R] = 0 (or no
    token): the ratio is undefined.
    """
    v, r = values.double(), returns.double()
    var_returns = masked_var(r, mask, unbiased=False).item()
    if var_returns == 0:
        return float("nan")
    return 1.0 - masked_var(r - v, mask, unbiased=False).item() / var_returns


# ---------------------------------------------------------------------------------------------
# Critic-free sequence-level advantages


def _groups(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """The flat (N,) rewards as (P, K), one row per prompt; checks k ≥ 2 and N divisible by k."""
    if k < 2:
        raise ValueError(f"need k >= 2 completions per prompt for a group baseline, got k={k}")
    if rewards.dim() != 1 or rewards.numel() % k:
        raise ValueError(f"rewards must be a flat (P*K,) vector with K={k}, got shape {tuple(rewards.shape)}")
    return rewards.float().reshape(-1, k)


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): r_i minus the mean of the other K − 1
    rewards of its prompt, (N,). Equals K/(K − 1)·(r_i − group mean)."""
    grouped = _groups(rewards, k)  # (P, K)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)
    return (grouped - others).reshape(-1)


def grpo_advantages(rewards: torch.Tensor, k: int, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (Shao et al. 2024): (r_i − group mean) / (group std + eps), (N,).

    std is the sample standard deviation (Bessel's correction, n − 1), as in DeepSeekMath's
    implementation and TRL. A group whose rewards are all equal gets 0. scale False only
    subtracts the mean (Dr. GRPO, Liu et al. 2025: dividing by the std over-weights easy and
    hopeless prompts).
    """
    grouped = _groups(rewards, k)  # (P, K)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centered = centered / (grouped.std(dim=1, correction=1, keepdim=True) + eps)
    return centered.reshape(-1)


class MovingBaseline:
    """REINFORCE with an exponential moving average of the batch mean reward as baseline.

    `advantages(rewards)` subtracts the baseline as it was before this batch (the batch's own mean
    on the first batch), then updates value ← decay·value + (1 − decay)·batch mean (the batch mean
    on the first batch).
    """

    def __init__(self, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.value: float | None = None

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """rewards (N,) minus the baseline; then folds this batch's mean into the baseline."""
        if rewards.numel() == 0:
            raise ValueError("MovingBaseline.advantages needs at least one reward")
        r = rewards.float()
        batch_mean = r.mean().item()
        baseline = batch_mean if self.value is None else self.value
        if self.value is None:
            self.value = batch_mean
        else:
            self.value = self.decay * self.value + (1.0 - self.decay) * batch_mean
        return r - baseline

    def state_dict(self) -> dict[str, float | None]:
        """The current baseline (None before the first batch)."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        """Restores the baseline saved by `state_dict`."""
        value = state["value"]
        self.value = None if value is None else float(value)


def broadcast_to_tokens(seq_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T): each row's scalar `seq_values` (B,) on its masked tokens, 0 elsewhere."""
    m = _bool(mask)
    values = seq_values.float().reshape(-1, 1).to(m.device)  # (B, 1)
    return _select(values.expand(m.shape), m)


# ---------------------------------------------------------------------------------------------
# KL coefficient controllers


class FixedKLController:
    """A constant KL coefficient β."""

    def __init__(self, coef: float) -> None:
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: the coefficient stays fixed."""

    def state_dict(self) -> dict[str, float]:
        """The current coefficient."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restores the coefficient saved by `state_dict`."""
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): steers the measured KL toward `target`.

    update(kl, n): e = clip(kl / target − 1, −0.2, 0.2), β ← β·(1 + e·n / horizon), where n counts
    what the horizon is measured in (in the paper, samples: the batch size).
    """

    def __init__(self, init_coef: float, target: float, horizon: float) -> None:
        if not target > 0 or not horizon > 0:
            raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got {target}, {horizon}")
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Moves β by at most ±20%·n_steps/horizon toward bringing current_kl to the target."""
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        """The current coefficient (target and horizon come from the configuration)."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restores the coefficient saved by `state_dict`."""
        self.value = float(state["value"])


def make_kl_controller(
    controller: str, coef: float, target: float | None = None, horizon: float | None = None
) -> FixedKLController | AdaptiveKLController:
    """The KL controller named by `controller`: "fixed" gives FixedKLController(coef), "adaptive"
    gives AdaptiveKLController(coef, target, horizon) (both required then)."""
    if controller == "fixed":
        return FixedKLController(coef)
    if controller == "adaptive":
        if target is None or horizon is None:
            raise ValueError("the adaptive KL controller needs a target and a horizon")
        return AdaptiveKLController(coef, target, horizon)
    raise ValueError(f"KL controller must be 'fixed' or 'adaptive', got {controller!r}")
