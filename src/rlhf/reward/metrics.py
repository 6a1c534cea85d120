"""Evaluation metrics of a reward model's scores, as plain Python numbers and lists (JSON-ready).

`rewards` is always the flat (N,) vector of one score per completion, and comparisons index it as
in `rlhf.losses.reward` (`PairBatch`, or per-prompt `ranks` where lower is better). Tie pairs of the
data never count toward accuracy; equal *rewards* on a decisive pair count as half right. A metric
with nothing to measure (no decisive pairs, an empty bin) is None (JSON null), never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlhf.losses.reward import PairBatch, ranking_pairs

QUANTILES = (5, 25, 50, 75, 95)
"""Percentiles `reward_stats` reports, as keys p5, p25, ..."""


def _values(rewards: torch.Tensor) -> torch.Tensor:
    return rewards.detach().to("cpu", torch.float64).reshape(-1)


def _decisive(rewards: torch.Tensor, pairs: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Δr = r[better] − r[worse] and the weight of every pair that is not a tie in the data: (P',)."""
    r = _values(rewards)
    pairs = pairs.to("cpu")
    keep = torch.ones(len(pairs), dtype=torch.bool) if pairs.tie is None else ~pairs.tie
    delta = r[pairs.better[keep]] - r[pairs.worse[keep]]
    return delta, pairs.weight[keep].double()


def _hits(delta: torch.Tensor) -> torch.Tensor:
    return (delta > 0).double() + 0.5 * (delta == 0).double()


def _mean(values: torch.Tensor, weight: torch.Tensor, weighted: bool) -> float | None:
    if values.numel() == 0:
        return None
    if weighted:
        return float((weight * values).sum() / weight.sum())
    return float(values.mean())


def pairwise_accuracy(rewards: torch.Tensor, pairs: PairBatch, *, weighted: bool = False) -> float | None:
    """Fraction of the data's decisive pairs the model orders the same way (Δr = 0 counts ½).

    Unweighted by default (every pair counts once); weighted=True uses the pairs' weights, i.e. the
    per-prompt average the training loss optimizes.
    """
    delta, weight = _decisive(rewards, pairs)
    return _mean(_hits(delta), weight, weighted)


def mean_margin(rewards: torch.Tensor, pairs: PairBatch, *, weighted: bool = False) -> float | None:
    """Mean reward gap Δr = r[better] − r[worse] over the decisive pairs (weighted as in accuracy)."""
    delta, weight = _decisive(rewards, pairs)
    return _mean(delta, weight, weighted)


def accuracy_by_position(
    rewards: torch.Tensor, ranks: Sequence[Sequence[float]], *, offsets: Sequence[int] | None = None
) -> list[dict[str, float | int]]:
    """Pairwise accuracy of rankings, split by the position of the pair's better completion.

    A completion's position is the number of completions of its prompt ranked strictly better
    (0 = best; tied completions share a position, as in "1, 2, 2, 4" competition ranking). Position p
    reports the accuracy over all decisive pairs (better at position p, worse ranked below it) of all
    prompts: p = 0 says how well the model finds the best completion, larger p how well it orders
    the tail. Returns [{"position", "pairs", "accuracy"}] for the positions that have pairs, in order.
    """
    pairs = ranking_pairs(ranks, ties="skip", offsets=offsets)
    position = torch.zeros(_values(rewards).numel(), dtype=torch.long)
    at = 0
    for g, group in enumerate(ranks):
        start = at if offsets is None else int(offsets[g])
        for i, rank in enumerate(group):
            position[start + i] = sum(other < rank for other in group)
        at += len(group)
    delta, _ = _decisive(rewards, pairs)
    hits, where = _hits(delta), position[pairs.better]
    return [
        {"position": int(p), "pairs": int((where == p).sum()), "accuracy": float(hits[where == p].mean())}
        for p in torch.unique(where).tolist()
    ]


def calibration(rewards: torch.Tensor, pairs: PairBatch, *, bins: int = 10) -> dict:
    """Does σ(Δr) match how often the model is right? Reliability bins and the expected calibration error.

    Pairs in the data are oriented better-first, so "P(first wins)" would always be observed as 1.
    Instead each decisive pair is oriented by the model: the prediction is the probability of the
    model's favourite, p = σ(|Δr|) ∈ [0.5, 1], and the outcome is 1 when that favourite is the data's
    better completion (0 when not, ½ when Δr = 0). The bins split [0.5, 1] into `bins` equal widths.
    Returns {"bins": [{"lower", "upper", "count", "predicted", "observed"}], "ece", "pairs"}, with
    predicted/observed the bin's mean prediction and outcome (None when empty) and
    ECE = Σ_bins count/pairs × |observed − predicted| (None without pairs).
    """
    if bins < 1:
        raise ValueError(f"bins must be ≥ 1, got {bins}")
    delta, _ = _decisive(rewards, pairs)
    predicted = torch.sigmoid(delta.abs())  # (P',) confidence in the model's favourite
    observed = _hits(delta)
    # p = 1.0 exactly (a saturated sigmoid) belongs in the last bin, not one past it.
    index = ((predicted - 0.5) * 2 * bins).floor().long().clamp(0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        row: dict[str, Any] = {
            "lower": 0.5 + 0.5 * b / bins,
            "upper": 0.5 + 0.5 * (b + 1) / bins,
            "count": count,
        }
        row["predicted"] = float(predicted[inside].mean()) if count else None
        row["observed"] = float(observed[inside].mean()) if count else None
        if count:
            ece += count / delta.numel() * abs(row["observed"] - row["predicted"])
        table.append(row)
    return {"bins": table, "ece": ece if delta.numel() else None, "pairs": int(delta.numel())}


def reward_stats(rewards: torch.Tensor, *, bins: int = 10) -> dict:
    """Summary of a set of rewards (N,), N ≥ 1: count, mean, std (population, so N = 1 gives 0),
    min, max, percentiles p5 … p95 (linear interpolation) and a histogram of `bins` equal-width
    bins over [min, max] ({"edges": bins + 1 floats, "counts": bins ints})."""
    r = _values(rewards)
    if r.numel() == 0:
        raise ValueError("reward_stats needs at least one reward")
    if not bool(torch.isfinite(r).all()):
        raise ValueError("rewards contain NaN or inf")
    stats: dict = {
        "count": int(r.numel()),
        "mean": float(r.mean()),
        "std": float(r.std(correction=0)),
        "min": float(r.min()),
        "max": float(r.max()),
    }
    levels = torch.tensor([q / 100 for q in QUANTILES], dtype=torch.float64)
    for q, value in zip(QUANTILES, torch.quantile(r, levels).tolist()):
        stats[f"p{q}"] = value
    counts, edges = torch.histogram(r, bins=bins)
    stats["histogram"] = {"edges": edges.tolist(), "counts": [int(c) for c in counts.tolist()]}
    return stats
