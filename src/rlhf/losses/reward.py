"""Reward-model losses over a flat vector of scalar rewards, one per completion of the batch.

Every completion is scored once: `rewards` is (N,), and comparisons index into it (`PairBatch`), so
a completion ranked against K − 1 others gets its gradient from all those pairs through one score.

- Pairs (Bradley–Terry): `pairwise_loss`, built by `ranking_pairs` (rankings and plain comparisons,
  which are rankings of two), `rating_pairs` (ratings of one prompt, margin = rating difference) or
  by hand (`PairBatch`, e.g. comparisons with a margin from the data).
- Listwise: `plackett_luce_loss` over each prompt's ranking.
- Pointwise: `regression_loss` to `normalize_ratings`, `label_loss` (BCE with logits).
- Auxiliary: `centering_penalty` keeps rewards near zero.

Every loss returns (loss, metrics): a float32 scalar and a dict of Python floats (None where a
metric has nothing to measure, e.g. accuracy over zero pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Ties = Literal["skip", "half"]
"""How a builder treats two completions judged equal: leave the pair out, or keep it as a tie pair
whose loss is ½(−log σ(Δ)) + ½(−log σ(−Δ)) (pulls the two rewards together)."""


@dataclass
class PairBatch:
    """The pairs of a batch, as indices into the flat reward vector (N,)."""

    better: torch.Tensor
    """(P,) long: index of the preferred completion (for a tie pair: either one)."""
    worse: torch.Tensor
    """(P,) long: index of the other completion."""
    weight: torch.Tensor
    """(P,) float: the pair's weight in the weighted mean, e.g. 1 / (counted pairs of its prompt)."""
    margin: torch.Tensor | None = None
    """(P,) float: required reward gap m in −log σ(r_better − r_worse − m); ignored on tie pairs."""
    tie: torch.Tensor | None = None
    """(P,) bool: tie pairs (the data prefers neither)."""

    def __post_init__(self) -> None:
        size = self.better.shape
        for name in ("worse", "weight", "margin", "tie"):
            value = getattr(self, name)
            if value is not None and value.shape != size:
                raise ValueError(f"PairBatch.{name} has shape {tuple(value.shape)}, expected {tuple(size)}")
        if self.better.dim() != 1:
            raise ValueError(f"PairBatch.better must be 1-D (P,), got shape {tuple(size)}")

    def __len__(self) -> int:
        return self.better.shape[0]

    def to(self, device: torch.device | str) -> PairBatch:
        """The same pairs on `device` (tensors already there are not copied)."""
        columns = (self.better, self.worse, self.weight, self.margin, self.tie)
        better, worse, weight = (t.to(device) for t in columns[:3])
        margin, tie = (None if t is None else t.to(device) for t in columns[3:])
        return PairBatch(better, worse, weight, margin, tie)


def concat_pairs(*batches: PairBatch) -> PairBatch:
    """One PairBatch from several (indices unchanged: they must already index the same flat vector).
    A missing margin counts as 0 and a missing tie mask as all False."""
    if not batches:
        raise ValueError("concat_pairs needs at least one PairBatch")

    def optional(name: str, dtype: torch.dtype) -> torch.Tensor | None:
        parts = [getattr(b, name) for b in batches]
        if all(part is None for part in parts):
            return None
        zeros = lambda b: torch.zeros(len(b), dtype=dtype, device=b.weight.device)  # noqa: E731
        return torch.cat([zeros(b) if part is None else part for part, b in zip(parts, batches)])

    return PairBatch(
        torch.cat([b.better for b in batches]),
        torch.cat([b.worse for b in batches]),
        torch.cat([b.weight for b in batches]),
        optional("margin", torch.float32),
        optional("tie", torch.bool),
    )


def _offsets(groups: Sequence[Sequence[float]], offsets: Sequence[int] | None) -> list[int]:
    """Where each group starts in the flat vector: consecutive from 0 unless given."""
    if offsets is None:
        starts, at = [], 0
        for group in groups:
            starts.append(at)
            at += len(group)
        return starts
    if len(offsets) != len(groups):
        raise ValueError(f"{len(offsets)} offsets for {len(groups)} groups")
    return [int(o) for o in offsets]


def _check_ties(ties: str) -> None:
    if ties not in ("skip", "half"):
        raise ValueError(f"ties must be 'skip' or 'half', got {ties!r}")


def _group_pairs(
    scores: Sequence[Sequence[float]], ties: Ties, offsets: Sequence[int] | None
) -> list[tuple[int, int, int, float, bool]]:
    """All pairs within each group, higher score = better, as (group, local better, local worse,
    weight, tie) with local indices inside the group."""
    _check_ties(ties)
    out: list[tuple[int, int, int, float, bool]] = []
    for g, group in enumerate(scores):
        found = []
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                if group[i] == group[j]:
                    if ties == "half":
                        found.append((i, j, True))
                else:
                    found.append((i, j, False) if group[i] > group[j] else (j, i, False))
        # Each prompt weighs 1 in total, whatever its number of completions (InstructGPT); the
        # normalizer counts only the pairs that are kept, so skipping ties does not shrink a prompt.
        out.extend((g, i, j, 1.0 / len(found), is_tie) for i, j, is_tie in found)
    return out


def ranking_pairs(
    ranks: Sequence[Sequence[float]], *, ties: Ties = "skip", offsets: Sequence[int] | None = None
) -> PairBatch:
    """All K(K−1)/2 pairs of each prompt's ranking; lower rank is better (as in `Ranking`).

    ranks: one list per prompt, one rank per completion; group g's completions sit at flat indices
    offsets[g] .. offsets[g] + K_g − 1 (consecutive from 0 when offsets is None).
    A plain comparison is the ranking [0, 1] (chosen first): one pair of weight 1.
    Each pair of a prompt weighs 1 / (pairs kept for that prompt), so every prompt with at least one
    kept pair weighs 1 in `pairwise_loss`.
    """
    found = _group_pairs([[-r for r in group] for group in ranks], ties, offsets)
    return _pair_batch(found, _offsets(ranks, offsets))


def normalize_ratings(ratings: torch.Tensor | Sequence[float], scale: tuple[float, float]) -> torch.Tensor:
    """Ratings on the inclusive scale [low, high] mapped linearly to [0, 1]: (r − low) / (high − low).

    Min-max on the declared scale (not standardization by batch statistics) so a rating's target
    does not depend on which other ratings share its batch. Returns float32 (N,).
    """
    low, high = float(scale[0]), float(scale[1])
    if not high > low:
        raise ValueError(f"rating scale must have high > low, got [{low:g}, {high:g}]")
    return (torch.as_tensor(ratings, dtype=torch.float32) - low) / (high - low)


def rating_pairs(
    ratings: Sequence[Sequence[float]],
    scale: tuple[float, float],
    *,
    margin_scale: float = 1.0,
    ties: Ties = "skip",
    offsets: Sequence[int] | None = None,
) -> PairBatch:
    """Pairs from the ratings of each prompt's completions; higher rating is better.

    Laid out and weighted like `ranking_pairs`. margin = margin_scale × (difference of the
    *normalized* ratings), so it lies in [0, margin_scale] whatever the scale's units (a 1–10 scale
    does not demand 9× the reward gap of a 0–1 scale); margin_scale=0 gives plain Bradley–Terry.
    Equal ratings are ties (margin 0).
    """
    found = _group_pairs(ratings, ties, offsets)
    normalized = [normalize_ratings(group, scale).tolist() for group in ratings]
    out = _pair_batch(found, _offsets(ratings, offsets))
    margins = [margin_scale * (normalized[g][i] - normalized[g][j]) for g, i, j, _, _ in found]
    out.margin = torch.tensor(margins, dtype=torch.float32)
    return out


def _pair_batch(found: list[tuple[int, int, int, float, bool]], starts: list[int]) -> PairBatch:
    return PairBatch(
        torch.tensor([starts[g] + i for g, i, _, _, _ in found], dtype=torch.long),
        torch.tensor([starts[g] + j for g, _, j, _, _ in found], dtype=torch.long),
        torch.tensor([w for *_, w, _ in found], dtype=torch.float32),
        tie=torch.tensor([t for *_, t in found], dtype=torch.bool),
    )


def _empty_loss(rewards: torch.Tensor) -> torch.Tensor:
    # Zero but still attached to the graph, so a batch with nothing to compare still runs backward
    # (every process of a distributed run must, or the gradient all-reduce hangs).
    return rewards.float().sum() * 0.0


def pairwise_loss(rewards: torch.Tensor, pairs: PairBatch) -> tuple[torch.Tensor, dict[str, float | None]]:
    """Bradley–Terry loss: Σ_p w_p · l_p / Σ_p w_p over the pairs, with Δ_p = r[better] − r[worse],

        l_p = −log σ(Δ_p − m_p)                 for a preference (m_p = 0 without margins),
        l_p = ½(−log σ(Δ_p)) + ½(−log σ(−Δ_p))  for a tie pair (margin ignored).

    rewards: (N,) one score per completion; pairs index it (moved to its device here).
    Which ties are in `pairs` is the builder's choice (`ties="skip"` leaves them out and renormalizes
    its prompt's weights), so the weighted mean is always over exactly the pairs given.
    Metrics (tie pairs excluded, unweighted): `accuracy` (Δ > 0; Δ = 0 counts ½), `reward_margin`
    (mean Δ), and `pairs` (all pairs given, ties included).
    """
    pairs = pairs.to(rewards.device)
    r = rewards.float()
    delta = r[pairs.better] - r[pairs.worse]  # (P,)
    shifted = delta if pairs.margin is None else delta - pairs.margin.float()
    per_pair = F.softplus(-shifted)  # −log σ(x) = log(1 + e^−x), stable for large |x|
    if pairs.tie is not None:
        per_pair = torch.where(pairs.tie, 0.5 * (F.softplus(-delta) + F.softplus(delta)), per_pair)
    weight = pairs.weight.float()
    total = weight.sum()
    loss = (weight * per_pair).sum() / total if len(pairs) and total > 0 else _empty_loss(rewards)
    with torch.no_grad():
        decisive = delta if pairs.tie is None else delta[~pairs.tie]
        hits = (decisive > 0).float() + 0.5 * (decisive == 0).float()
        metrics = {
            "accuracy": hits.mean().item() if decisive.numel() else None,
            "reward_margin": decisive.mean().item() if decisive.numel() else None,
            "pairs": float(len(pairs)),
        }
    return loss, metrics


def plackett_luce_loss(
    rewards: torch.Tensor, ranks: Sequence[Sequence[float]], *, offsets: Sequence[int] | None = None
) -> tuple[torch.Tensor, dict[str, float | None]]:
    """Listwise Plackett–Luce loss over each prompt's ranking (lower rank is better), mean over prompts.

    rewards: (N,); ranks and offsets laid out as in `ranking_pairs`. Without ties a group's negative
    log-likelihood is −Σ_i [r_i − log Σ_{j ranked at or below i} e^{r_j}], the model picking the
    best remaining completion at each step. Ties use Breslow's rule (as for ties in the Cox partial
    likelihood, which is the same model): every completion of a tied tier is chosen against the whole
    tier and everything below it, so the result does not depend on the order of tied completions.
    A group's loss is its NLL divided by its number of choices (completions competing against at
    least one other, K − 1 without ties), so a prompt's weight does not grow with K; with K = 2
    this is exactly −log σ(r_better − r_worse). Groups whose completions are all tied order nothing
    and are skipped. Metric `top1_accuracy`: fraction of the counted groups whose highest reward is
    a best-ranked completion.
    """
    starts = _offsets(ranks, offsets)
    r = rewards.float()
    losses, top1 = [], []
    for start, group in zip(starts, ranks):
        rank = torch.as_tensor(group, dtype=torch.float32, device=r.device)  # (K,)
        if rank.numel() < 2 or bool((rank == rank[0]).all()):
            continue
        scores = r[start : start + rank.numel()]  # (K,)
        # at_or_below[i, j]: completion j is still in the running when i is chosen.
        at_or_below = rank.unsqueeze(0) >= rank.unsqueeze(1)  # (K, K)
        pool = torch.logsumexp(scores.unsqueeze(0).masked_fill(~at_or_below, float("-inf")), dim=1)  # (K,)
        choice = at_or_below.sum(dim=1) >= 2  # the last completion alone has nothing to beat
        losses.append(-(scores - pool)[choice].sum() / choice.sum())
        top1.append(float(rank[scores.argmax()] == rank.min()))
    if not losses:
        return _empty_loss(rewards), {"top1_accuracy": None, "groups": 0.0}
    loss = torch.stack(losses).mean()
    return loss, {"top1_accuracy": sum(top1) / len(top1), "groups": float(len(losses))}


def regression_loss(
    rewards: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float | None]]:
    """Mean squared error of the raw reward against targets, e.g. `normalize_ratings(...)` in [0, 1].

    rewards, targets: (N,). The reward itself (not σ(r)) is regressed, so reward differences stay
    proportional to rating differences. Metric `mae`: mean absolute error.
    """
    r = rewards.float()
    targets = targets.to(device=r.device, dtype=torch.float32)
    if r.numel() == 0:
        return _empty_loss(rewards), {"mae": None}
    loss = F.mse_loss(r, targets)
    return loss, {"mae": (r - targets).abs().mean().item()}


def label_loss(rewards: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float | None]]:
    """Pointwise binary labels (e.g. good 1 / harmful 0): mean BCE with logits, σ(r) = P(good).

    rewards, targets: (N,), targets in [0, 1] (soft labels allowed). Metric `accuracy`: how often
    r > 0 agrees with target ≥ 0.5 (r = 0 counts ½).
    """
    r = rewards.float()
    targets = targets.to(device=r.device, dtype=torch.float32)
    if r.numel() == 0:
        return _empty_loss(rewards), {"accuracy": None}
    loss = F.binary_cross_entropy_with_logits(r, targets)
    with torch.no_grad():
        signed = torch.where(targets >= 0.5, r, -r)
        hits = (signed > 0).float() + 0.5 * (signed == 0).float()
    return loss, {"accuracy": hits.mean().item()}


def centering_penalty(
    rewards: torch.Tensor,
    coef: float,
    *,
    offsets: Sequence[int] | None = None,
    counted: Sequence[bool] | None = None,
    denominator: float | None = None,
) -> torch.Tensor:
    """coef × mean(r²): an auxiliary loss that keeps rewards near zero (Eisenstein et al. 2023),
    since pairwise losses only see differences and leave the offset free.

    Without `offsets`: coef × mean(r²) over the rewards (N,). With `offsets` (where each group
    starts in the flat vector): coef × Σ_g mean_{i∈g}(r_i²) / denominator over the groups with
    `counted[g]` (all by default), so every prompt weighs the same, like the pairwise loss, and a
    step split over micro-batches or processes adds up to the same penalty when `denominator` is the
    step's total count of groups (default: the counted groups here).
    """
    if rewards.numel() == 0:
        return _empty_loss(rewards)
    square = rewards.float().pow(2)
    if offsets is None:
        return coef * square.mean()
    starts = torch.tensor([*offsets, rewards.numel()], device=rewards.device)
    sizes = starts[1:] - starts[:-1]  # (G,)
    group = torch.repeat_interleave(torch.arange(len(offsets), device=rewards.device), sizes)  # (N,)
    means = torch.zeros(len(offsets), device=rewards.device).index_add(0, group, square) / sizes.clamp(min=1)
    keep = torch.ones(len(offsets), dtype=torch.bool) if counted is None else torch.tensor(list(counted))
    keep = keep.to(rewards.device)
    total = float(keep.sum()) if denominator is None else float(denominator)
    if total == 0:
        return _empty_loss(rewards)
    return coef * means[keep].sum() / total
