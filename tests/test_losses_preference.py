"""DPO, IPO, conservative DPO and RRHF losses against hand-worked values."""

import math

import pytest
import torch

from rlhf.losses.preference import (
    PairLogps,
    best_of_groups,
    dpo_loss,
    dpo_losses,
    implicit_reward_metrics,
    rrhf_rank_loss,
)


def pair(pc, pr, rc, rr) -> PairLogps:
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return PairLogps(t(pc), t(pr), t(rc), t(rr))


# One pair: log π(y_w) = -1, log π(y_l) = -2, both -1.5 under the reference.
# h = (-1 + 1.5) - (-2 + 1.5) = 0.5 + 0.5 = 1.
ONE = pair([-1.0], [-2.0], [-1.5], [-1.5])


def test_dpo_sigmoid_by_hand():
    # β = 0.5: -log σ(0.5) = log(1 + e^-0.5) = 0.474077...
    assert dpo_loss(ONE, beta=0.5).item() == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-12)
    assert dpo_loss(ONE, beta=0.5).item() == pytest.approx(0.4740769841801067, abs=1e-12)


def test_conservative_dpo_by_hand():
    # ε = 0.1: 0.9 · log(1 + e^-0.5) + 0.1 · log(1 + e^0.5) = 0.9 · 0.474077 + 0.1 · 0.974077 = 0.524077
    loss = dpo_loss(ONE, beta=0.5, loss_type="conservative", label_smoothing=0.1).item()
    assert loss == pytest.approx(0.9 * 0.4740769841801067 + 0.1 * 0.9740769841801067, abs=1e-12)
    assert loss == pytest.approx(0.5240769841801067, abs=1e-12)
    # ε = 0 is plain DPO.
    assert dpo_loss(ONE, 0.5, "conservative", 0.0).item() == pytest.approx(dpo_loss(ONE, 0.5).item())


def test_ipo_by_hand():
    # (h - 1/(2β))²: β = 0.5 -> (1 - 1)² = 0; β = 0.25 -> (1 - 2)² = 1; β = 1 -> (1 - 0.5)² = 0.25.
    assert dpo_loss(ONE, beta=0.5, loss_type="ipo").item() == 0.0
    assert dpo_loss(ONE, beta=0.25, loss_type="ipo").item() == pytest.approx(1.0)
    assert dpo_loss(ONE, beta=1.0, loss_type="ipo").item() == pytest.approx(0.25)


def test_weights_and_gradient_direction():
    two = pair([-1.0, -3.0], [-2.0, -1.0], [-1.5, -2.0], [-1.5, -2.0])
    # Pair 2: h = (-3 + 2) - (-1 + 2) = -2.
    per = dpo_losses(two, beta=1.0)
    assert per.tolist() == pytest.approx([math.log1p(math.exp(-1.0)), math.log1p(math.exp(2.0))])
    w = torch.tensor([3.0, 1.0], dtype=torch.float64)
    assert dpo_loss(two, 1.0, weights=w).item() == pytest.approx((3 * per[0] + per[1]).item() / 4)
    # Descending the loss raises the chosen log-prob and lowers the rejected one.
    chosen = torch.tensor([-1.0], requires_grad=True)
    rejected = torch.tensor([-2.0], requires_grad=True)
    dpo_loss(PairLogps(chosen, rejected, torch.tensor([-1.5]), torch.tensor([-1.5])), 0.5).backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()
    # d/dπ_w of -log σ(β h) = -β σ(-β h) = -0.5 · σ(-0.5)
    assert chosen.grad.item() == pytest.approx(-0.5 / (1 + math.exp(0.5)), abs=1e-6)


def test_implicit_reward_metrics_by_hand():
    two = pair([-1.0, -3.0], [-2.0, -1.0], [-1.5, -2.0], [-1.5, -2.0])
    m = implicit_reward_metrics(two, beta=0.5)
    # Chosen rewards 0.5·0.5 = 0.25 and 0.5·(-1) = -0.5; rejected -0.25 and 0.5.
    assert m["rewards/chosen"].item() == pytest.approx((0.25 - 0.5) / 2)
    assert m["rewards/rejected"].item() == pytest.approx((-0.25 + 0.5) / 2)
    assert m["rewards/margin"].item() == pytest.approx((0.5 - 1.0) / 2)
    assert m["rewards/accuracy"].item() == 0.5
    tie = implicit_reward_metrics(pair([-1.0], [-1.0], [-1.0], [-1.0]), beta=0.5)
    assert tie["rewards/accuracy"].item() == 0.5


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(ONE, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(ONE, 0.5, "conservative", 0.5)
    with pytest.raises(ValueError, match="conservative"):
        dpo_loss(ONE, 0.5, "sigmoid", 0.1)
    with pytest.raises(ValueError, match="weights"):
        dpo_loss(ONE, 0.5, weights=torch.zeros(1, dtype=torch.float64))


def test_rrhf_rank_loss_by_hand():
    # One group of 3: scores [1, 3, 2], length-normalized log-probs [-0.5, -1.0, -2.0].
    # Pairs (worse, better): (0, 1): max(0, -0.5 + 1.0) = 0.5; (0, 2): max(0, -0.5 + 2.0) = 1.5;
    # (2, 1): max(0, -2.0 + 1.0) = 0. Sum 2.0.
    p = torch.tensor([-0.5, -1.0, -2.0])
    s = torch.tensor([1.0, 3.0, 2.0])
    assert rrhf_rank_loss(p, s, [0, 3]).item() == pytest.approx(2.0)
    assert best_of_groups(s, [0, 3]) == [1]
    # A second group already ordered right costs nothing; a tie makes no pair. Mean over groups: 1.0.
    p2 = torch.cat([p, torch.tensor([-0.1, -0.9, -0.9])])
    s2 = torch.cat([s, torch.tensor([2.0, 1.0, 1.0])])
    assert rrhf_rank_loss(p2, s2, [0, 3, 6]).item() == pytest.approx(1.0)
    assert rrhf_rank_loss(p2, s2, [0, 3, 6], weights=torch.tensor([1.0, 3.0])).item() == pytest.approx(0.5)
    assert best_of_groups(s2, [0, 3, 6]) == [1, 3]
    # The gradient pushes the worse response down and the better one up.
    q = p.clone().requires_grad_(True)
    rrhf_rank_loss(q, s, [0, 3]).backward()
    assert q.grad.tolist() == [2.0, -1.0, -1.0]


def test_rrhf_refuses_bad_groups():
    with pytest.raises(ValueError, match="offsets"):
        rrhf_rank_loss(torch.zeros(3), torch.zeros(3), [0, 2])
    with pytest.raises(ValueError, match="at least 2"):
        rrhf_rank_loss(torch.zeros(3), torch.zeros(3), [0, 1, 3])
