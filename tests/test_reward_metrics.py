"""Reward-model evaluation metrics on small hand-worked cases; every result must be strict JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf.losses import PairBatch, pairwise_loss, ranking_pairs
from rlhf.reward.metrics import (
    accuracy_by_position,
    calibration,
    mean_margin,
    pairwise_accuracy,
    reward_stats,
)


def _strict_json(value: object) -> None:
    json.dumps(value, allow_nan=False)


def test_pairwise_accuracy_and_margin_two_thirds() -> None:
    # ranks [1, 2, 3], rewards [3, 1, 2]: (0,1) 3 > 1 right, (0,2) 3 > 2 right, (1,2) 1 < 2 wrong → 2/3.
    rewards = torch.tensor([3.0, 1.0, 2.0])
    pairs = ranking_pairs([[1, 2, 3]])
    assert pairwise_accuracy(rewards, pairs) == pytest.approx(2 / 3)
    assert mean_margin(rewards, pairs) == pytest.approx((2 + 1 - 1) / 3)  # Δr = 2, 1, −1
    # The training loss reports the same accuracy.
    assert pairwise_loss(rewards, pairs)[1]["accuracy"] == pytest.approx(2 / 3)


def test_weighted_accuracy_averages_prompts() -> None:
    # Prompt A as above (2/3 right, weight 1/3 per pair), prompt B a comparison scored wrong (0 < 1).
    rewards = torch.tensor([3.0, 1.0, 2.0, 0.0, 1.0])
    pairs = ranking_pairs([[1, 2, 3], [0, 1]])
    assert pairwise_accuracy(rewards, pairs) == pytest.approx(2 / 4)
    assert pairwise_accuracy(rewards, pairs, weighted=True) == pytest.approx((2 / 3 + 0) / 2)
    # Weighted margin: A's mean 2/3 and B's −1, averaged per prompt.
    assert mean_margin(rewards, pairs, weighted=True) == pytest.approx((2 / 3 - 1) / 2)


def test_equal_rewards_count_half_and_data_ties_are_excluded() -> None:
    assert pairwise_accuracy(torch.tensor([1.0, 1.0]), ranking_pairs([[0, 1]])) == 0.5
    # ranks [1, 1, 2] with the tie kept as a pair: only (0,2) and (1,2) count; (1,2) is wrong.
    pairs = ranking_pairs([[1, 1, 2]], ties="half")
    rewards = torch.tensor([5.0, -1.0, 0.0])
    assert pairwise_accuracy(rewards, pairs) == 0.5
    assert pairwise_accuracy(rewards, ranking_pairs([[1, 1]], ties="half")) is None


def test_accuracy_by_position() -> None:
    # Prompt A ranks [1, 2, 3], rewards [3, 1, 2]: position 0 (the best) beats both others → 2/2;
    # position 1 loses to the last → 0/1. Prompt B ranks [2, 1], rewards [0, 5]: its best (position 0) wins.
    rewards = torch.tensor([3.0, 1.0, 2.0, 0.0, 5.0])
    table = accuracy_by_position(rewards, [[1, 2, 3], [2, 1]])
    assert table == [
        {"position": 0, "pairs": 3, "accuracy": 1.0},
        {"position": 1, "pairs": 1, "accuracy": 0.0},
    ]
    # Tied completions share a position: ranks [1, 1, 2] → positions 0, 0, 2; the last has no pairs.
    tied = accuracy_by_position(torch.tensor([2.0, -1.0, 0.0]), [[1, 1, 2]])
    assert tied == [{"position": 0, "pairs": 2, "accuracy": 0.5}]
    # Offsets place a group anywhere in the flat vector.
    moved = accuracy_by_position(torch.tensor([9.0, 3.0, 1.0, 2.0]), [[1, 2, 3]], offsets=[1])
    assert moved == [
        {"position": 0, "pairs": 2, "accuracy": 1.0},
        {"position": 1, "pairs": 1, "accuracy": 0.0},
    ]
    _strict_json(table)


def test_calibration_bins_by_hand() -> None:
    # Four decisive pairs (better first) with Δr = 0, 0.2, 3, −3, and one data tie that must not count.
    # Confidence in the model's favourite p = σ(|Δr|): 0.5, 0.549834, 0.952574, 0.952574;
    # outcome (favourite is the data's better): ½, 1, 1, 0.
    rewards = torch.tensor([0.0, 0.0, 0.2, 0.0, 3.0, 0.0, 0.0, 3.0, 1.0, 0.0])
    pairs = PairBatch(
        torch.tensor([0, 2, 4, 6, 8]),
        torch.tensor([1, 3, 5, 7, 9]),
        torch.ones(5),
        tie=torch.tensor([False, False, False, False, True]),
    )
    result = calibration(rewards, pairs, bins=5)
    bins = result["bins"]
    assert [b["count"] for b in bins] == [2, 0, 0, 0, 2] and result["pairs"] == 4
    assert [b["lower"] for b in bins] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # Bin [0.5, 0.6): predicted (0.5 + 0.549834) / 2 = 0.524917, observed (½ + 1) / 2 = 0.75.
    assert bins[0]["predicted"] == pytest.approx((0.5 + s(0.2)) / 2) and bins[0]["observed"] == 0.75
    # Bin [0.9, 1.0]: predicted 0.952574, observed (1 + 0) / 2 = 0.5. Empty bins say None.
    assert bins[4]["predicted"] == pytest.approx(s(3.0)) and bins[4]["observed"] == 0.5
    assert bins[1]["predicted"] is None and bins[1]["observed"] is None
    # ECE = ½ |0.75 − 0.524917| + ½ |0.5 − 0.952574| = 0.338829
    assert result["ece"] == pytest.approx(0.338829, abs=1e-6)
    _strict_json(result)


def test_calibration_saturated_and_empty() -> None:
    # σ(100) rounds to exactly 1.0: it belongs to the last bin, not past it.
    result = calibration(torch.tensor([100.0, 0.0]), ranking_pairs([[0, 1]]), bins=4)
    assert [b["count"] for b in result["bins"]] == [0, 0, 0, 1] and result["ece"] == pytest.approx(0.0)
    empty = calibration(torch.tensor([1.0, 1.0]), ranking_pairs([[1, 1]], ties="half"), bins=2)
    assert empty["ece"] is None and empty["pairs"] == 0
    _strict_json(empty)


def test_reward_stats() -> None:
    # [0, 1, 2, 3, 4]: mean 2, population std √2, linear-interpolated percentiles (p5 = 0.05 × 4 = 0.2).
    stats = reward_stats(torch.tensor([3.0, 0.0, 4.0, 1.0, 2.0]), bins=4)
    assert stats["count"] == 5 and stats["mean"] == 2.0 and stats["std"] == pytest.approx(math.sqrt(2))
    assert (stats["min"], stats["max"]) == (0.0, 4.0)
    quantiles = [stats[k] for k in ("p5", "p25", "p50", "p75", "p95")]
    assert quantiles == pytest.approx([0.2, 1.0, 2.0, 3.0, 3.8])
    assert stats["histogram"] == {"edges": [0.0, 1.0, 2.0, 3.0, 4.0], "counts": [1, 1, 1, 2]}
    _strict_json(stats)
    one = reward_stats(torch.tensor([1.5]))
    assert one["std"] == 0.0 and sum(one["histogram"]["counts"]) == 1
    with pytest.raises(ValueError, match="at least one"):
        reward_stats(torch.tensor([]))
