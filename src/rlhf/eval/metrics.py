"""Policy-evaluation math on plain Python numbers (JSON-ready; no torch).

Win rate. Each prompt is one trial: the policy's score against the baseline's on the same prompt
(a reward model's or a gold function's). Outcome 1 = win, ½ = tie (|difference| <= `tie_tolerance`),
0 = loss; the win rate is the mean outcome. Its 95% interval is the normal approximation
mean ± z·s/√n with s the sample standard deviation of the outcomes (ddof 1), clipped to [0, 1]:
it handles the ½ outcomes that a binomial (Wilson) interval cannot, and it is what the usual
"win rate ± 1.96 SE" tables report. With one prompt there is no interval (None).

Difference of two policies on one metric (ROUGE, a classifier's probability, ...), prompt by
prompt: the mean of the paired differences d_i = a_i − b_i, its standard error s_d/√n (ddof 1) and
the 95% interval mean ± z·s_d/√n (normal approximation; pairing removes the prompts' own spread).

KL from a reference, on the policy's own samples y ~ π(·|x): KL(π‖ref) per prompt is estimated by
Σ_t [log π(y_t | x, y_<t) − log ref(y_t | x, y_<t)] over the sampled tokens (the unbiased "k1"
estimator of the sequence KL; it can be negative on one sample, never in expectation). Reported:
the mean over prompts with its standard error, and the mean per token.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054
"""The standard normal's 97.5% quantile: a two-sided 95% interval."""


@dataclass
class MeanStat:
    mean: float | None
    stderr: float | None
    """Standard error of the mean, s / √n (None below 2 values)."""
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def mean_stat(values: Sequence[float]) -> MeanStat:
    """Mean and its standard error (sample standard deviation, ddof 1, over √n)."""
    n = len(values)
    if n == 0:
        return MeanStat(None, None, 0)
    mean = math.fsum(values) / n
    stderr = statistics.stdev(values) / math.sqrt(n) if n >= 2 else None
    return MeanStat(mean, stderr, n)


@dataclass
class WinRate:
    n: int
    wins: int
    ties: int
    losses: int
    rate: float | None
    """(wins + ties / 2) / n."""
    low: float | None
    high: float | None
    """The 95% interval (normal approximation, clipped to [0, 1]); None with fewer than 2 prompts."""

    def as_dict(self) -> dict:
        return asdict(self)


def win_rate(scores: Sequence[float], baseline: Sequence[float], *, tie_tolerance: float = 0.0) -> WinRate:
    """Win rate of `scores` over `baseline`, prompt by prompt (both in the same prompt order)."""
    if len(scores) != len(baseline):
        raise ValueError(f"{len(scores)} scores but {len(baseline)} baseline scores; one each per prompt")
    if tie_tolerance < 0:
        raise ValueError(f"tie_tolerance must be >= 0, got {tie_tolerance}")
    outcomes = []
    for a, b in zip(scores, baseline):
        outcomes.append(0.5 if abs(a - b) <= tie_tolerance else (1.0 if a > b else 0.0))
    wins, ties = outcomes.count(1.0), outcomes.count(0.5)
    stat = mean_stat(outcomes)
    low = high = None
    if stat.stderr is not None and stat.mean is not None:
        low = max(0.0, stat.mean - Z95 * stat.stderr)
        high = min(1.0, stat.mean + Z95 * stat.stderr)
    return WinRate(len(outcomes), wins, ties, len(outcomes) - wins - ties, stat.mean, low, high)


@dataclass
class Difference:
    mean: float | None
    """Mean over prompts of (policy − baseline)."""
    stderr: float | None
    low: float | None
    high: float | None
    """The 95% interval of the mean difference; None with fewer than 2 prompts."""
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def paired_difference(scores: Sequence[float], baseline: Sequence[float]) -> Difference:
    """Mean of `scores` − `baseline` prompt by prompt, with its 95% interval (both in prompt order)."""
    if len(scores) != len(baseline):
        raise ValueError(f"{len(scores)} scores but {len(baseline)} baseline scores; one each per prompt")
    stat = mean_stat([a - b for a, b in zip(scores, baseline)])
    if stat.mean is None or stat.stderr is None:
        return Difference(stat.mean, None, None, None, stat.n)
    half = Z95 * stat.stderr
    return Difference(stat.mean, stat.stderr, stat.mean - half, stat.mean + half, stat.n)


@dataclass
class KLStat:
    sequence: MeanStat
    """Per-prompt Σ_t (log π − log ref), mean and standard error over prompts."""
    per_token: float | None
    """Σ over all sampled tokens of (log π − log ref) / their number."""
    tokens: int

    def as_dict(self) -> dict:
        return {"sequence": self.sequence.as_dict(), "per_token": self.per_token, "tokens": self.tokens}


def sequence_kl(logprobs: Sequence[Sequence[float]], ref_logprobs: Sequence[Sequence[float]]) -> KLStat:
    """KL(π‖ref) from the log-probabilities of each sampled completion's tokens under both models."""
    if len(logprobs) != len(ref_logprobs):
        raise ValueError(f"{len(logprobs)} sequences but {len(ref_logprobs)} reference sequences")
    sums, total, tokens = [], 0.0, 0
    for i, (mine, ref) in enumerate(zip(logprobs, ref_logprobs)):
        if len(mine) != len(ref):
            raise ValueError(f"sequence {i}: {len(mine)} log-probs but {len(ref)} under the reference")
        diff = math.fsum(a - b for a, b in zip(mine, ref))
        sums.append(diff)
        total += diff
        tokens += len(mine)
    return KLStat(mean_stat(sums), total / tokens if tokens else None, tokens)


def length_stats(lengths: Sequence[int]) -> dict[str, float | None]:
    """Mean, median and 90th percentile (nearest rank) of completion lengths."""
    if not lengths:
        return {"mean": None, "median": None, "p90": None}
    ordered = sorted(lengths)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return {"mean": math.fsum(ordered) / len(ordered), "median": statistics.median(ordered), "p90": p90}
