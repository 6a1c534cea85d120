"""Policy-evaluation math against hand-worked values."""

from __future__ import annotations

import math

import pytest

from rlhf.eval.metrics import Z95, length_stats, mean_stat, sequence_kl, win_rate


def test_win_rate_counts_ties_as_half_with_a_normal_interval():
    # Outcomes: win, win, tie, loss -> mean (1 + 1 + 0.5 + 0) / 4 = 0.625.
    result = win_rate([3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 5.0])
    assert (result.n, result.wins, result.ties, result.losses) == (4, 2, 1, 1)
    assert result.rate == pytest.approx(0.625)
    # Sample variance: deviations .375, .375, -.125, -.625 -> squares .140625 * 2 + .015625 + .390625
    # = .6875; / 3 = .229167; s = .478714; SE = s / 2 = .239357.
    se = math.sqrt(0.6875 / 3) / 2
    assert result.low == pytest.approx(0.625 - Z95 * se)
    assert result.high == pytest.approx(min(1.0, 0.625 + Z95 * se))
    assert result.high == 1.0  # 0.625 + 0.469 clipped


def test_win_rate_tolerance_edges_and_errors():
    assert win_rate([1.0, 1.05], [1.0, 1.0], tie_tolerance=0.1).ties == 2
    assert win_rate([1.0, 1.2], [1.0, 1.0], tie_tolerance=0.1).wins == 1
    one = win_rate([2.0], [1.0])
    assert one.rate == 1.0 and one.low is None and one.high is None
    sure = win_rate([2.0, 3.0], [1.0, 1.0])
    assert (sure.rate, sure.low, sure.high) == (1.0, 1.0, 1.0)  # no spread: a zero-width interval
    assert win_rate([], []).rate is None
    with pytest.raises(ValueError, match="one each per prompt"):
        win_rate([1.0], [1.0, 2.0])


def test_sequence_kl_k1_by_hand():
    # Sequence 1: (−1 − −2) + (−0.5 − −0.5) = 1; sequence 2: (−3 − −1) = −2.
    kl = sequence_kl([[-1.0, -0.5], [-3.0]], [[-2.0, -0.5], [-1.0]])
    assert kl.sequence.mean == pytest.approx(-0.5)
    # s = sqrt(((1.5)^2 + (1.5)^2) / 1) = 2.1213; SE = s / sqrt(2) = 1.5.
    assert kl.sequence.stderr == pytest.approx(1.5)
    assert kl.per_token == pytest.approx(-1.0 / 3) and kl.tokens == 3
    assert sequence_kl([[-1.0]], [[-1.0]]).sequence.mean == 0.0
    with pytest.raises(ValueError, match="sequence 0"):
        sequence_kl([[-1.0]], [[-1.0, -2.0]])


def test_mean_stat_and_lengths():
    stat = mean_stat([1.0, 2.0, 3.0, 4.0])
    assert stat.mean == 2.5 and stat.stderr == pytest.approx(math.sqrt(5 / 3) / 2)
    assert mean_stat([]).mean is None and mean_stat([7.0]).stderr is None
    assert length_stats([5, 1, 3, 10, 2, 8, 4, 7, 6, 9]) == {"mean": 5.5, "median": 5.5, "p90": 9}
    assert length_stats([]) == {"mean": None, "median": None, "p90": None}
