"""PPO and critic-free advantage math against hand-worked values on tiny tensors.

Most tensors are B=2, T=3 with the last token of row 1 padded; padded entries hold garbage (large
numbers or NaN) on purpose, so a function that lets padding leak fails.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.losses.ppo import (
    AdaptiveKLController,
    FixedKLController,
    MovingBaseline,
    broadcast_to_tokens,
    engine_mismatch,
    explained_variance,
    gae,
    grpo_advantages,
    kl_per_token,
    make_kl_controller,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    policy_loss,
    rloo_advantages,
    tis_weights,
    token_rewards,
    value_loss,
)
from rlhf.models.readout import entropy_from_logits, token_logprobs
from tolerance import reorder_tol

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # five real tokens, (1, 2) padded
NAN = float("nan")


def _t(rows: list[list[float]], grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, requires_grad=grad)


def _close(actual: torch.Tensor, expected: list | float, atol: float = 1e-6) -> None:
    """Elementwise |actual − expected| ≤ atol, expected nested like actual.tolist()."""
    assert actual.shape == torch.as_tensor(expected).shape
    assert actual.flatten().tolist() == pytest.approx(torch.as_tensor(expected).flatten().tolist(), abs=atol)


def test_masked_statistics() -> None:
    # Real entries 1, 2, 3, 4, 5 (the padded 100 is ignored): sum 15, mean 3,
    # squared deviations 4 + 1 + 0 + 1 + 4 = 10 → unbiased var 10 / 4 = 2.5, population var 10 / 5 = 2.
    x = _t([[1, 2, 3], [4, 5, 100]])
    assert masked_sum(x, MASK).item() == 15.0
    assert masked_mean(x, MASK).item() == pytest.approx(3.0)
    assert masked_mean(x, MASK.bool(), dim=1).tolist() == pytest.approx([2.0, 4.5])
    assert masked_var(x, MASK).item() == pytest.approx(2.5)
    assert masked_var(x, MASK, unbiased=False).item() == pytest.approx(2.0)
    # Nothing masked: 0, not NaN.
    empty = torch.zeros(2, 3)
    assert masked_mean(x, empty).item() == 0.0 and masked_var(x, empty).item() == 0.0
    assert masked_mean(x, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), dim=1).tolist() == [1.5, 0.0]


def test_whitening_under_a_mask() -> None:
    # Mean 3, unbiased std √2.5 = 1.581139: (x − 3) / 1.581139 = [−1.264911, −0.632456, 0, 0.632456, 1.264911].
    x = _t([[1, 2, 3], [4, 5, NAN]])
    white = masked_whiten(x, MASK)
    _close(white, [[-1.264911, -0.632456, 0.0], [0.632456, 1.264911, 0.0]])
    assert masked_mean(white, MASK).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(white, MASK).item() == pytest.approx(1.0, abs=1e-6)
    # shift_mean=False puts the mean 3 back: [1.735089, 2.367544, 3, 3.632456, 4.264911]; padding still 0.
    _close(masked_whiten(x, MASK, shift_mean=False), [[1.735089, 2.367544, 3.0], [3.632456, 4.264911, 0.0]])
    # With a cross-process sum (here one process: the identity) the statistics come out the same.
    _close(
        masked_whiten(x, MASK, reduce_sum=lambda t: t),
        [[-1.264911, -0.632456, 0.0], [0.632456, 1.264911, 0.0]],
    )


def test_kl_estimators() -> None:
    # d = logp − ref = [0.5, −1]:
    # k1 = d = [0.5, −1]; k2 = d²/2 = [0.125, 0.5];
    # k3 = e^−d − 1 + d = [0.606531 − 0.5, e − 2] = [0.106531, 0.718282].
    logp, ref = _t([[-1.0, -2.0]]), _t([[-1.5, -1.0]])
    _close(kl_per_token(logp, ref, "k1"), [[0.5, -1.0]])
    _close(kl_per_token(logp, ref, "k2"), [[0.125, 0.5]])
    _close(kl_per_token(logp, ref, "k3"), [[0.106531, 0.718282]])
    assert kl_per_token(ref, ref, "k3").tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match="k1"):
        kl_per_token(logp, ref, "k4")


def test_token_rewards() -> None:
    # −0.5·kl = [[−0.05, −0.1, −0.15], [−0.2, −0.25, pad]]; score 1 lands on (0, 2), −2 on (1, 1):
    # [[−0.05, −0.1, 0.85], [−0.2, −2.25, 0]].
    kl = _t([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    rewards = token_rewards(torch.tensor([1.0, -2.0]), kl, MASK, beta=0.5)
    _close(rewards, [[-0.05, -0.1, 0.85], [-0.2, -2.25, 0.0]])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        token_rewards(torch.tensor([1.0, -2.0]), kl, torch.tensor([[1, 1, 1], [0, 0, 0]]), beta=0.5)


# rewards and values for GAE; the padded (1, 2) holds garbage that must not matter.
REWARDS = _t([[1.0, 0.0, 2.0], [0.5, 1.0, 9.0]])
VALUES = _t([[0.5, 1.0, -1.0], [1.0, 2.0, 7.0]])


def test_gae_by_hand() -> None:
    # γ = 0.9, λ = 0.5, γλ = 0.45.
    # Row 0: t=2 (last, V_3 = 0): δ = 2 − (−1) = 3,             A = 3
    #        t=1: δ = 0 + 0.9·(−1) − 1 = −1.9,                 A = −1.9 + 0.45·3 = −0.55
    #        t=0: δ = 1 + 0.9·1 − 0.5 = 1.4,                   A = 1.4 + 0.45·(−0.55) = 1.1525
    #        returns A + V = [1.6525, 0.45, 2]
    # Row 1: t=1 is its last token (m_2 = 0, so the garbage V = 7 is not bootstrapped):
    #        δ = 1 − 2 = −1,                                   A = −1
    #        t=0: δ = 0.5 + 0.9·2 − 1 = 1.3,                   A = 1.3 + 0.45·(−1) = 0.85
    #        returns [1.85, 1, 0]
    advantages, returns = gae(REWARDS, VALUES, MASK, gamma=0.9, lam=0.5)
    _close(advantages, [[1.1525, -0.55, 3.0], [0.85, -1.0, 0.0]])
    _close(returns, [[1.6525, 0.45, 2.0], [1.85, 1.0, 0.0]])


def test_gae_with_gamma_and_lambda_one_returns_the_reward_to_go() -> None:
    # R_t = Σ_{s≥t} r_s whatever the values: row 0 [1+0+2, 0+2, 2] = [3, 2, 2]; row 1 [1.5, 1, 0].
    advantages, returns = gae(REWARDS, VALUES, MASK.bool(), gamma=1.0, lam=1.0)
    _close(returns, [[3.0, 2.0, 2.0], [1.5, 1.0, 0.0]])
    _close(advantages, [[2.5, 1.0, 3.0], [0.5, -1.0, 0.0]])  # R − V
    # λ = 0 is the one-step TD error: row 0 t=0, δ = 1 + 1·1 − 0.5 = 1.5.
    assert gae(REWARDS, VALUES, MASK, gamma=1.0, lam=0.0)[0][0, 0].item() == pytest.approx(1.5)


# Policy-loss tokens (ε = 0.2), ratio ρ and advantage A; (1, 2) is padding with a huge log-prob.
#   (0,0) ρ=1.5 A=+1: ρA = 1.5, clip(ρ)A = 1.2 → min 1.2,  l = −1.2  clipped
#   (0,1) ρ=0.5 A=+1: ρA = 0.5, clip(ρ)A = 0.8 → min 0.5,  l = −0.5  not clipped
#   (0,2) ρ=1.1 A=−2: ρA = −2.2 = clip(ρ)A     → min −2.2, l = 2.2   not clipped (inside the range)
#   (1,0) ρ=1.5 A=−1: ρA = −1.5, clip(ρ)A = −1.2 → min −1.5, l = 1.5  not clipped (pessimistic side)
#   (1,1) ρ=0.5 A=−1: ρA = −0.5, clip(ρ)A = −0.8 → min −0.8, l = 0.8  clipped
# Σ l = −1.2 − 0.5 + 2.2 + 1.5 + 0.8 = 2.8 → mean 0.56; clip_frac 2/5.
RATIO = [[1.5, 0.5, 1.1], [1.5, 0.5, 1.0]]
OLD_LOGP = _t([[-1.0, -2.0, -0.5], [-3.0, -1.0, -1.0]])
ADVANTAGES = _t([[1.0, 1.0, -2.0], [-1.0, -1.0, NAN]])


def _logp() -> torch.Tensor:
    logp = (OLD_LOGP + torch.tensor(RATIO).log()).detach()
    logp[1, 2] = 200.0  # exp(200 − old) overflows float32 if padding is not masked before exp
    return logp.requires_grad_()


def test_policy_loss_clipped() -> None:
    logp = _logp()
    loss, stats = policy_loss(logp, OLD_LOGP, ADVANTAGES, MASK, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.56, abs=1e-6)
    assert stats["clip_frac"] == pytest.approx(0.4)
    # approx_kl: (ρ − 1) − log ρ = 0.094535 (ρ=1.5), 0.193147 (ρ=0.5), 0.004690 (ρ=1.1);
    # (2·0.094535 + 2·0.193147 + 0.004690) / 5 = 0.580054 / 5 = 0.116011
    assert stats["approx_kl"] == pytest.approx(0.116011, abs=1e-6)
    assert stats["ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.1 + 1.5 + 0.5) / 5, abs=1e-6)
    # d l / d logp = −A·ρ where the unclipped term is chosen, 0 where the clipped one is; / 5 tokens:
    # (0,1) −0.5/5 = −0.1, (0,2) 2.2/5 = 0.44, (1,0) 1.5/5 = 0.3; clipped tokens and padding 0.
    loss.backward()
    _close(logp.grad, [[0.0, -0.1, 0.44], [0.3, 0.0, 0.0]])


def test_policy_loss_unclipped() -> None:
    # With ε = 10 nothing is clipped: l = −ρA; Σ ρA = 1.5 + 0.5 − 2.2 − 1.5 − 0.5 = −2.2 → loss 2.2/5 = 0.44.
    loss, stats = policy_loss(_logp(), OLD_LOGP, ADVANTAGES, MASK, clip_eps=10.0)
    assert loss.item() == pytest.approx(0.44, abs=1e-6)
    assert stats["clip_frac"] == 0.0
    # At ρ = 1 (the first epoch) the loss is −mean A and nothing is clipped or diverged.
    loss, stats = policy_loss(OLD_LOGP.clone(), OLD_LOGP, ADVANTAGES, MASK, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(1 + 1 - 2 - 1 - 1) / 5, abs=1e-6)
    assert stats == {"clip_frac": 0.0, "approx_kl": 0.0, "ratio_mean": 1.0}


def test_token_weights_scale_each_tokens_loss() -> None:
    # Unclipped (ε = 10), l = −ρA per token = −1.5, −0.5, 2.2 | 1.5, 0.5 (row 1's third is padding).
    # Weights 2, 1, 0.5 | 1, 0 (the 9 on padding must not count): (−3 − 0.5 + 1.1 + 1.5 + 0) / 5 = −0.18.
    weights = torch.tensor([[2.0, 1.0, 0.5], [1.0, 0.0, 9.0]])
    loss, _ = policy_loss(_logp(), OLD_LOGP, ADVANTAGES, MASK, clip_eps=10.0, token_weights=weights)
    assert loss.item() == pytest.approx(-0.18, abs=1e-6)


def test_truncated_importance_weights_and_the_engine_mismatch() -> None:
    # π_trainer / π_engine: 0.5 / 0.25 = 2, capped at 1.5; 0.2 / 0.4 = 0.5, under the cap.
    old = torch.log(torch.tensor([[0.5, 0.2]]))
    engine = torch.log(torch.tensor([[0.25, 0.4]]))
    _close(tis_weights(old, engine, cap=1.5), [[1.5, 0.5]])
    # log π_engine − log π_trainer = −log 2, +log 2: they cancel in the KL sum, not in |.|.
    m = engine_mismatch(old, engine, torch.ones(1, 2))
    assert m["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert m["abs_diff"].item() == pytest.approx(2 * math.log(2), abs=1e-6)
    assert m["max_diff"].item() == pytest.approx(math.log(2), abs=1e-6) and m["tokens"].item() == 2


def test_denominator_makes_micro_batches_add_up() -> None:
    # Row 0 alone, over the minibatch's 5 tokens: (−1.2 − 0.5 + 2.2) / 5 = 0.1; row 1: (1.5 + 0.8) / 5 = 0.46;
    # 0.1 + 0.46 = 0.56, the full masked mean, and so do the gradients.
    logp = _logp()
    halves = [
        policy_loss(logp[i : i + 1], OLD_LOGP[i : i + 1], ADVANTAGES[i : i + 1], MASK[i : i + 1], 0.2, 5)[0]
        for i in (0, 1)
    ]
    assert [h.item() for h in halves] == pytest.approx([0.1, 0.46], abs=1e-6)
    (halves[0] + halves[1]).backward()
    _close(logp.grad, [[0.0, -0.1, 0.44], [0.3, 0.0, 0.0]])
    # The value loss reduces the same way: ½(V − R)² summed per row over 5 tokens.
    values, returns = _t([[1.0, 0.0, 2.0], [0.3, -1.0, 0.0]]), _t([[0.0, 1.0, 2.5], [1.0, 0.0, 0.0]])
    full = value_loss(values, values, returns, MASK)[0].item()
    parts = [value_loss(v, v, r, m, denominator=5)[0] for v, r, m in zip(values, returns, MASK)]
    assert full == pytest.approx(0.374, abs=1e-6)  # worked in test_value_loss_clipped_and_unclipped
    assert sum(p.item() for p in parts) == pytest.approx(full, abs=1e-6)
    with pytest.raises(ValueError, match="denominator"):
        policy_loss(logp, OLD_LOGP, ADVANTAGES, MASK, 0.2, denominator=0)


def test_value_loss_clipped_and_unclipped() -> None:
    values = _t([[1.0, 0.0, 2.0], [0.3, -1.0, NAN]], grad=True)
    old = _t([[0.5, 0.0, 2.0], [0.0, -0.5, 5.0]])
    returns = _t([[0.0, 1.0, 2.5], [1.0, 0.0, 5.0]])
    # Unclipped ½(V − R)²: ½·[1, 1, 0.25, 0.49, 1] = [0.5, 0.5, 0.125, 0.245, 0.5], Σ 1.87 → mean 0.374.
    loss, stats = value_loss(values, old, returns, MASK)
    assert loss.item() == pytest.approx(0.374, abs=1e-6) and stats == {"value_clip_frac": 0.0}
    # Clip 0.2, V_c = old + clamp(V − old, ±0.2):
    #   (0,0) V − old = 0.5 → V_c = 0.7: (0.7 − 0)² = 0.49 < 1         → ½·1 = 0.5
    #   (0,1), (0,2) V = old → V_c = V                                     → 0.5, 0.125
    #   (1,0) V − old = 0.3 → V_c = 0.2: (0.2 − 1)² = 0.64 > 0.49      → ½·0.64 = 0.32  (clipped)
    #   (1,1) V − old = −0.5 → V_c = −0.7: 0.49 < 1                       → 0.5
    # Σ = 0.5 + 0.5 + 0.125 + 0.32 + 0.5 = 1.945 → mean 0.389; value_clip_frac 1/5.
    loss, stats = value_loss(values, old, returns, MASK, clip=0.2)
    assert loss.item() == pytest.approx(0.389, abs=1e-6)
    assert stats["value_clip_frac"] == pytest.approx(0.2)
    # Gradient (V − R)/5 where the unclipped term is chosen, 0 at (1,0) whose clipped V_c is constant.
    loss.backward()
    _close(values.grad, [[0.2, -0.2, -0.1], [0.0, -0.2, 0.0]])


def test_entropy_from_logits() -> None:
    # Uniform over V = 4: log 4 = 1.386294. p = [¼, ¾] (logits [0, log 3]):
    # −(¼ log ¼ + ¾ log ¾) = 0.346574 + 0.215762 = 0.562335, also after a shift of 1000 (e^1000 overflows).
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3), -math.inf, -math.inf]])
    logits.requires_grad_()
    _close(entropy_from_logits(logits), [1.386294, 0.562335])
    shifted = torch.tensor([1000.0, 1000.0 + math.log(3)], dtype=torch.float64)
    _close(entropy_from_logits(shifted), 0.562335)
    # Banned tokens (−inf) are p = 0: [0, 0, −inf] is uniform over two, log 2, with a finite gradient.
    entropy_from_logits(logits).sum().backward()
    assert torch.isfinite(logits.grad).all()
    _close(entropy_from_logits(torch.tensor([0.0, 0.0, -math.inf])), math.log(2))


def test_explained_variance() -> None:
    # Real R = [1, 3, 3, 5, 5]: mean 3.4, population var (5.76 + 0.16 + 0.16 + 2.56 + 2.56) / 5 = 2.24.
    # R − V = [0, 1, 0, 1, 0]: mean 0.4, var (0.16 + 0.36 + 0.16 + 0.36 + 0.16) / 5 = 0.24.
    # 1 − 0.24 / 2.24 = 25/28 = 0.892857
    values, returns = _t([[1, 2, 3], [4, 5, NAN]]), _t([[1, 3, 3], [5, 5, NAN]])
    assert explained_variance(values, returns, MASK) == pytest.approx(0.892857, abs=1e-6)
    assert explained_variance(returns, returns, MASK) == pytest.approx(1.0)
    assert math.isnan(explained_variance(values, torch.ones(2, 3), MASK))  # Var[R] = 0


def test_adaptive_kl_controller() -> None:
    # β = 0.1, target 6, horizon 10000:
    #   kl 9:   error 9/6 − 1 = 0.5 → clipped to 0.2;   β ← 0.1 · (1 + 0.2·1000/10000) = 0.1 · 1.02 = 0.102
    #   kl 3:   error −0.5 → −0.2;                     β ← 0.102 · 0.98 = 0.09996
    #   kl 6.6: error 0.1 (inside the clip), n = 500;   β ← 0.09996 · (1 + 0.1·0.05) = 0.09996 · 1.005 = 0.1004598
    kl = AdaptiveKLController(init_coef=0.1, target=6.0, horizon=10000)
    kl.update(9.0, 1000)
    assert kl.value == pytest.approx(0.102, abs=1e-9)
    kl.update(3.0, 1000)
    assert kl.value == pytest.approx(0.09996, abs=1e-9)
    kl.update(6.6, 500)
    assert kl.value == pytest.approx(0.1004598, abs=1e-9)
    restored = make_kl_controller("adaptive", 1.0, target=6.0, horizon=10000)
    restored.load_state_dict(kl.state_dict())
    assert isinstance(restored, AdaptiveKLController) and restored.value == kl.value
    # Fixed: update changes nothing.
    fixed = make_kl_controller("fixed", 0.05)
    fixed.update(100.0, 1000)
    assert isinstance(fixed, FixedKLController) and fixed.value == 0.05
    with pytest.raises(ValueError, match="target"):
        make_kl_controller("adaptive", 0.1)
    with pytest.raises(ValueError, match="fixed"):
        make_kl_controller("pid", 0.1)


# Two prompts, K = 3 completions each, prompt-major.
SEQ_REWARDS = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 4.0])


def test_rloo_advantages() -> None:
    # Prompt 0: 1 − (2+3)/2 = −1.5, 2 − (1+3)/2 = 0, 3 − (1+2)/2 = 1.5;
    # prompt 1: 0 − (0+4)/2 = −2, −2, 4 − 0 = 4.
    _close(rloo_advantages(SEQ_REWARDS, 3), [-1.5, 0.0, 1.5, -2.0, -2.0, 4.0])
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(SEQ_REWARDS, 1)
    with pytest.raises(ValueError, match="K=4"):
        rloo_advantages(SEQ_REWARDS, 4)


def test_grpo_advantages() -> None:
    # Prompt 0: mean 2, sample std √((1 + 0 + 1)/2) = 1 → [−1, 0, 1] / (1 + 1e−6) = [−0.999999, 0, 0.999999].
    # Prompt 1: mean 4/3, deviations [−4/3, −4/3, 8/3], sample var (16/9 + 16/9 + 64/9)/2 = 16/3,
    #           std 4/√3 = 2.309401 → [−0.577350, −0.577350, 1.154700].
    _close(grpo_advantages(SEQ_REWARDS, 3), [-0.999999, 0.0, 0.999999, -0.577350, -0.577350, 1.154700])
    # scale=False only centers: [−1, 0, 1, −4/3, −4/3, 8/3].
    _close(grpo_advantages(SEQ_REWARDS, 3, scale=False), [-1.0, 0.0, 1.0, -4 / 3, -4 / 3, 8 / 3])
    # A group whose completions all score the same teaches nothing: 0, not NaN.
    _close(grpo_advantages(torch.tensor([0.7, 0.7]), 2), [0.0, 0.0])


def test_moving_baseline_sequence() -> None:
    # decay 0.9. Batch [1, 3] (mean 2): no baseline yet, the batch mean 2 → [−1, 1]; value 2.
    # Batch [4, 6] (mean 5): baseline 2 → [2, 4]; value 0.9·2 + 0.1·5 = 2.3.
    # Batch [0, 1] (mean 0.5): baseline 2.3 → [−2.3, −1.3]; value 0.9·2.3 + 0.1·0.5 = 2.12.
    baseline = MovingBaseline(decay=0.9)
    assert baseline.value is None
    _close(baseline.advantages(torch.tensor([1.0, 3.0])), [-1.0, 1.0])
    assert baseline.value == pytest.approx(2.0)
    _close(baseline.advantages(torch.tensor([4.0, 6.0])), [2.0, 4.0])
    assert baseline.value == pytest.approx(2.3)
    _close(baseline.advantages(torch.tensor([0.0, 1.0])), [-2.3, -1.3])
    assert baseline.value == pytest.approx(2.12)
    restored = MovingBaseline(decay=0.9)
    restored.load_state_dict(baseline.state_dict())
    assert restored.value == pytest.approx(2.12)


def test_broadcast_to_tokens() -> None:
    _close(broadcast_to_tokens(torch.tensor([2.0, -1.0]), MASK), [[2.0, 2.0, 2.0], [-1.0, -1.0, 0.0]])


def test_token_logprobs_at_a_temperature_with_entropy() -> None:
    # logits [0, ln 3] at T = 1: p = [1/4, 3/4]; at T = 0.5 (logits doubled, [0, ln 9]): p = [1/10, 9/10].
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    tokens = torch.tensor([1])
    plain = token_logprobs(logits, tokens, entropy=True)
    _close(plain.logprobs, [math.log(0.75)])
    _close(plain.entropy, [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))])  # 0.562335
    assert not plain.entropy.requires_grad  # a metric: no graph
    hot = token_logprobs(logits, tokens, temperature=0.5, entropy="grad")
    _close(hot.logprobs, [math.log(0.9)])
    _close(hot.entropy, [-(0.1 * math.log(0.1) + 0.9 * math.log(0.9))])  # 0.325083
    assert hot.entropy.requires_grad
    # Greedy decoding (temperature 0) is read at temperature 1.
    _close(token_logprobs(logits, tokens, temperature=0.0).logprobs, [math.log(0.75)])
    # A banned token (-inf logit) has probability 0: no NaN in the entropy.
    banned = token_logprobs(torch.tensor([0.0, 0.0, -math.inf]), torch.tensor(0), entropy=True)
    _close(banned.logprobs, math.log(0.5))
    _close(banned.entropy, math.log(2.0))


def test_k2_in_the_loss_has_the_exact_kl_gradient_and_k1_none() -> None:
    # One state, vocabulary of 4: the policy's logits z, the reference's log-probs log q. The loss
    # term differentiates only through log p(a) of the sampled token a; its expectation over a ~ p
    # (enumerated, weights detached) is Σ_a p_a d_a ∇log p_a = Σ_a d_a ∇p_a = ∇ KL(p‖q), because
    # Σ_a p_a ∇log p_a = ∇ Σ_a p_a = 0 — which is also why k1 = d there has no gradient at all.
    z = torch.tensor([1.0, -0.5, 2.0, 0.3], dtype=torch.float64, requires_grad=True)
    log_q = torch.log_softmax(torch.tensor([0.2, 0.9, -1.0, 0.0], dtype=torch.float64), dim=0)
    log_p = torch.log_softmax(z, dim=0)
    exact = torch.autograd.grad((log_p.exp() * (log_p - log_q)).sum(), z)[0]
    for estimator, expected in (("k2", exact), ("k1", torch.zeros(4, dtype=torch.float64))):
        log_p = torch.log_softmax(z, dim=0)
        terms = kl_per_token(log_p, log_q, estimator)  # (4,): the term were each token the sample
        expectation = (log_p.exp().detach() * terms).sum()
        grad = torch.autograd.grad(expectation, z)[0]
        # kl_per_token works in float32: 4 terms of size <= 3 (|d| here) summed against float64.
        assert torch.allclose(grad, expected, atol=reorder_tol(3.0, 4)), (estimator, grad, expected)
