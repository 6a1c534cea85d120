"""Reward-model losses against hand-worked values on tiny tensors.

Notation: sp(x) = −log σ(x) = log(1 + e^−x); σ(x) = 1 / (1 + e^−x).
"""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.losses import (
    PairBatch,
    centering_penalty,
    concat_pairs,
    label_loss,
    normalize_ratings,
    pairwise_loss,
    plackett_luce_loss,
    ranking_pairs,
    rating_pairs,
    regression_loss,
)


def _r(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def _pairs(better: list[int], worse: list[int], weight: list[float] | None = None, **extra) -> PairBatch:
    weight = [1.0] * len(better) if weight is None else weight
    return PairBatch(torch.tensor(better), torch.tensor(worse), torch.tensor(weight), **extra)


def test_bradley_terry_by_hand() -> None:
    # r_w = 2, r_l = 0: −log σ(2) = log(1 + e^−2) = log(1.135335) = 0.126928
    loss, metrics = pairwise_loss(_r(2.0, 0.0), _pairs([0], [1]))
    assert loss.item() == pytest.approx(0.126928, abs=1e-6)
    assert metrics == {"accuracy": 1.0, "reward_margin": 2.0, "pairs": 1.0}
    # Reversed: −log σ(−2) = 2 + 0.126928 = 2.126928, and the model gets it wrong.
    loss, metrics = pairwise_loss(_r(0.0, 2.0), _pairs([0], [1]))
    assert loss.item() == pytest.approx(2.126928, abs=1e-6)
    assert metrics["accuracy"] == 0.0 and metrics["reward_margin"] == -2.0


def test_margin_is_subtracted_from_the_reward_gap() -> None:
    # Δ = 2 with margin 1: −log σ(1) = 0.313262; margin 3: −log σ(−1) = 1 + 0.313262 = 1.313262.
    pairs = _pairs([0, 0], [1, 1], margin=torch.tensor([1.0, 3.0]))
    loss, _ = pairwise_loss(_r(2.0, 0.0), pairs)
    assert loss.item() == pytest.approx((0.313262 + 1.313262) / 2, abs=1e-6)


def test_ties_skip_versus_half() -> None:
    # ranks [1, 1, 2] (completions 0 and 1 tied), rewards [1, 0, −1].
    rewards = _r(1.0, 0.0, -1.0)
    skip = ranking_pairs([[1, 1, 2]], ties="skip")
    # skip: pairs (0,2) Δ=2 and (1,2) Δ=1, each weighted 1/2 (the tie does not count in the normalizer):
    # (sp(2) + sp(1)) / 2 = (0.126928 + 0.313262) / 2 = 0.220095
    assert skip.better.tolist() == [0, 1] and skip.worse.tolist() == [2, 2]
    assert skip.weight.tolist() == [0.5, 0.5] and not skip.tie.any()
    assert pairwise_loss(rewards, skip)[0].item() == pytest.approx(0.220095, abs=1e-6)
    # half: plus the tie (0,1), Δ=1: ½ sp(1) + ½ sp(−1) = ½ (0.313262 + 1.313262) = 0.813262;
    # three pairs weighted 1/3: (0.813262 + 0.126928 + 0.313262) / 3 = 0.417817
    half = ranking_pairs([[1, 1, 2]], ties="half")
    assert half.tie.tolist() == [True, False, False]
    assert half.weight.tolist() == pytest.approx([1 / 3] * 3)
    loss, metrics = pairwise_loss(rewards, half)
    assert loss.item() == pytest.approx(0.417817, abs=1e-6)
    # The tie pair is left out of accuracy and reward margin: (2 + 1) / 2.
    assert metrics["accuracy"] == 1.0 and metrics["reward_margin"] == 1.5 and metrics["pairs"] == 3.0
    # A tie's margin is ignored, whichever orientation the pair has.
    with_margin = _pairs([1], [0], margin=torch.tensor([5.0]), tie=torch.tensor([True]))
    assert pairwise_loss(rewards, with_margin)[0].item() == pytest.approx(0.813262, abs=1e-6)
    with pytest.raises(ValueError, match="ties"):
        ranking_pairs([[1, 2]], ties="drop")


def test_ranking_loss_is_the_weighted_average_of_its_pairs() -> None:
    # Prompt A: K=3 ranked [1, 2, 3] with rewards [1, 0.5, −1]; prompt B: a comparison [0.3 chosen, 0.8].
    rewards = _r(1.0, 0.5, -1.0, 0.3, 0.8)
    pairs = ranking_pairs([[1, 2, 3], [0, 1]])
    assert list(zip(pairs.better.tolist(), pairs.worse.tolist())) == [(0, 1), (0, 2), (1, 2), (3, 4)]
    assert pairs.weight.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    # A: sp(0.5) = 0.474077, sp(2) = 0.126928, sp(1.5) = 0.201413 → mean 0.267473
    # B: sp(−0.5) = 0.974077 → loss = (0.267473 + 0.974077) / 2 = 0.620775
    loss, metrics = pairwise_loss(rewards, pairs)
    assert loss.item() == pytest.approx(0.620775, abs=1e-6)
    assert metrics["accuracy"] == 0.75  # 3 of 4 pairs, unweighted
    # The same number from one pairwise_loss call per pair, averaged with the stated weights.
    single = [pairwise_loss(rewards, _pairs([b], [w]))[0].item() for b, w in [(0, 1), (0, 2), (1, 2), (3, 4)]]
    weights = [1 / 3, 1 / 3, 1 / 3, 1.0]
    assert loss.item() == pytest.approx(sum(w * s for w, s in zip(weights, single)) / sum(weights), abs=1e-6)


def test_ranking_pairs_orientation_and_offsets() -> None:
    # ranks [3, 1, 2]: completion 1 is best, then 2, then 0.
    pairs = ranking_pairs([[3, 1, 2]], offsets=[5])
    assert sorted(zip(pairs.better.tolist(), pairs.worse.tolist())) == [(6, 5), (6, 7), (7, 5)]
    # A group with everything tied has no pair under "skip" and weighs nothing.
    assert len(ranking_pairs([[2, 2], [0, 1]], ties="skip")) == 1
    with pytest.raises(ValueError, match="offsets"):
        ranking_pairs([[0, 1]], offsets=[0, 2])


def test_every_completion_gets_gradient_from_all_its_pairs() -> None:
    # K=3 ranked [1, 2, 3], rewards [1, 0.5, −1], weights 1/3; d sp(Δ)/dΔ = −σ(−Δ), Δ01=0.5, Δ02=2, Δ12=1.5.
    rewards = _r(1.0, 0.5, -1.0, grad=True)
    loss, _ = pairwise_loss(rewards, ranking_pairs([[1, 2, 3]]))
    loss.backward()
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [
        -(s(-0.5) + s(-2.0)) / 3,  # better in (0,1) and (0,2): −0.165581
        (s(-0.5) - s(-1.5)) / 3,  # worse in (0,1), better in (1,2): 0.065038
        (s(-2.0) + s(-1.5)) / 3,  # worse in (0,2) and (1,2): 0.100543
    ]
    assert rewards.grad.tolist() == pytest.approx(expected, abs=1e-6)
    assert rewards.grad.sum().item() == pytest.approx(0.0, abs=1e-7)  # only differences matter


def test_no_pairs_gives_a_zero_loss_that_still_backpropagates() -> None:
    rewards = _r(1.0, 2.0, grad=True)
    loss, metrics = pairwise_loss(rewards, ranking_pairs([[1, 1]]))
    loss.backward()
    assert loss.item() == 0.0 and rewards.grad.tolist() == [0.0, 0.0]
    assert metrics == {"accuracy": None, "reward_margin": None, "pairs": 0.0}


def test_plackett_luce_by_hand() -> None:
    # ranks [1, 2, 3], rewards [1, 0.5, −1]:
    # NLL = −[1 − log(e^1 + e^0.5 + e^−1)] − [0.5 − log(e^0.5 + e^−1)]
    #     = −(1 − log 4.734883) − (0.5 − log 2.016602) = 0.554957 + 0.201413 = 0.756370;
    # two choices (the last completion has nothing to beat) → 0.756370 / 2 = 0.378185
    lse3 = math.log(math.e + math.exp(0.5) + math.exp(-1))
    lse2 = math.log(math.exp(0.5) + math.exp(-1))
    nll = -(1 - lse3) - (0.5 - lse2)
    assert nll == pytest.approx(0.756370, abs=1e-6)
    loss, metrics = plackett_luce_loss(_r(1.0, 0.5, -1.0), [[1, 2, 3]])
    assert loss.item() == pytest.approx(0.378185, abs=1e-6)
    assert metrics == {"top1_accuracy": 1.0, "groups": 1.0}
    # The listing order of the completions does not matter.
    assert plackett_luce_loss(_r(-1.0, 1.0, 0.5), [[3, 1, 2]])[0].item() == pytest.approx(0.378185, abs=1e-6)


def test_plackett_luce_two_completions_is_bradley_terry_and_groups_average() -> None:
    rewards = _r(1.0, 0.5, -1.0, 0.3, 0.8)
    pl, metrics = plackett_luce_loss(rewards, [[0, 1]], offsets=[3])
    assert pl.item() == pytest.approx(0.974077, abs=1e-6)  # sp(0.3 − 0.8) = sp(−0.5)
    assert metrics["top1_accuracy"] == 0.0
    both, _ = plackett_luce_loss(rewards, [[1, 2, 3], [0, 1]])
    assert both.item() == pytest.approx((0.378185 + 0.974077) / 2, abs=1e-6)


def test_plackett_luce_ties_breslow() -> None:
    # ranks [1, 1, 2], rewards [1, 0, −1]: both tied completions are chosen against all three
    # (LSE = log(e + 1 + e^−1) = 1.407606); the last one alone is no choice. Per choice:
    # −[(1 − 1.407606) + (0 − 1.407606)] / 2 = 0.907606
    assert plackett_luce_loss(_r(1.0, 0.0, -1.0), [[1, 1, 2]])[0].item() == pytest.approx(0.907606, abs=1e-6)
    # Order-independent: swapping the tied completions changes nothing.
    assert plackett_luce_loss(_r(0.0, 1.0, -1.0), [[1, 1, 2]])[0].item() == pytest.approx(0.907606, abs=1e-6)
    # An all-tied group orders nothing: skipped, zero loss, still attached to the graph.
    rewards = _r(1.0, 0.0, grad=True)
    loss, metrics = plackett_luce_loss(rewards, [[4, 4]])
    loss.backward()
    assert loss.item() == 0.0 and metrics == {"top1_accuracy": None, "groups": 0.0}


def test_rating_regression() -> None:
    # scale [1, 5]: 1 → 0, 3 → 0.5, 5 → 1.
    targets = normalize_ratings([1, 3, 5], (1, 5))
    assert targets.tolist() == [0.0, 0.5, 1.0]
    # rewards [0, 1, 1]: squared errors 0, 0.25, 0 → MSE 0.083333; absolute errors mean 0.5 / 3.
    loss, metrics = regression_loss(_r(0.0, 1.0, 1.0), targets)
    assert loss.item() == pytest.approx(0.25 / 3, abs=1e-7)
    assert metrics["mae"] == pytest.approx(0.5 / 3, abs=1e-7)
    with pytest.raises(ValueError, match="high > low"):
        normalize_ratings([1.0], (5, 5))


def test_rating_pairs_margin_is_the_normalized_difference() -> None:
    # ratings [5, 3, 3] on [1, 5] → normalized [1, 0.5, 0.5]; margin_scale 2 → margins 2 × 0.5 = 1.
    rewards = _r(1.0, 0.0, 0.5)
    skip = rating_pairs([[5, 3, 3]], (1, 5), margin_scale=2.0)
    assert list(zip(skip.better.tolist(), skip.worse.tolist())) == [(0, 1), (0, 2)]
    assert skip.margin.tolist() == [1.0, 1.0] and skip.weight.tolist() == [0.5, 0.5]
    # (0,1): Δ − m = 1 − 1 = 0 → log 2 = 0.693147; (0,2): 0.5 − 1 = −0.5 → sp(−0.5) = 0.974077 → mean 0.833612
    assert pairwise_loss(rewards, skip)[0].item() == pytest.approx(0.833612, abs=1e-6)
    # half adds the tie (1,2), Δ = −0.5: ½ (sp(−0.5) + sp(0.5)) = ½ (0.974077 + 0.474077) = 0.724077;
    # weights 1/3: (0.693147 + 0.974077 + 0.724077) / 3 = 0.797100
    half = rating_pairs([[5, 3, 3]], (1, 5), margin_scale=2.0, ties="half")
    assert half.margin.tolist() == [1.0, 1.0, 0.0]
    assert pairwise_loss(rewards, half)[0].item() == pytest.approx(0.797100, abs=1e-6)
    # Higher rating is better whatever the listing order; offsets place the group.
    flipped = rating_pairs([[2, 4]], (0, 4), offsets=[3])
    assert (flipped.better.tolist(), flipped.worse.tolist(), flipped.margin.tolist()) == ([4], [3], [0.5])


def test_label_bce_by_hand() -> None:
    # r = 0, target 1: −log σ(0) = log 2 = 0.693147; r = 2, target 0: −log(1 − σ(2)) = sp(−2) = 2.126928
    loss, metrics = label_loss(_r(0.0, 2.0), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx((0.693147 + 2.126928) / 2, abs=1e-6)
    assert metrics["accuracy"] == 0.25  # r = 0 counts ½, the second is wrong
    assert label_loss(_r(3.0, -1.0), torch.tensor([1, 0]))[1]["accuracy"] == 1.0


def test_centering_penalty() -> None:
    # 0.01 × mean(1², (−3)²) = 0.01 × 5 = 0.05; gradient 0.01 × 2r / N = [0.01, −0.03].
    rewards = _r(1.0, -3.0, grad=True)
    penalty = centering_penalty(rewards, 0.01)
    penalty.backward()
    assert penalty.item() == pytest.approx(0.05)
    assert rewards.grad.tolist() == pytest.approx([0.01, -0.03])


def test_centering_penalty_per_group_adds_up_across_micro_batches() -> None:
    # Groups [1, −3] and [2]: group means of r² are 5 and 4; 0.01 × (5 + 4) / 2 = 0.045.
    rewards = _r(1.0, -3.0, 2.0)
    assert centering_penalty(rewards, 0.01, offsets=[0, 2]).item() == pytest.approx(0.045)
    # A group that carries no weight (e.g. only ties) is left out: 0.01 × 5 / 1.
    assert centering_penalty(rewards, 0.01, offsets=[0, 2], counted=[True, False]).item() == pytest.approx(
        0.05
    )
    # Split into two micro-batches over the step's 2 groups, the parts add up to the whole.
    first = centering_penalty(_r(1.0, -3.0), 0.01, offsets=[0], denominator=2)
    second = centering_penalty(_r(2.0), 0.01, offsets=[0], denominator=2)
    assert (first + second).item() == pytest.approx(0.045)


def test_pair_batch_checks_and_concat() -> None:
    with pytest.raises(ValueError, match="weight"):
        PairBatch(torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0, 1.0]))
    plain = _pairs([0], [1])
    tied = ranking_pairs([[1, 1]], ties="half", offsets=[2])
    with_margin = _pairs([4], [5], margin=torch.tensor([0.5]))
    both = concat_pairs(plain, tied, with_margin)
    assert both.better.tolist() == [0, 2, 4] and both.worse.tolist() == [1, 3, 5]
    assert both.margin.tolist() == [0.0, 0.0, 0.5]
    assert both.tie.tolist() == [False, True, False]
    assert concat_pairs(plain, plain).margin is None
