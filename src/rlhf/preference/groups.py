"""Preferences as groups of completions, and what to learn from groups laid end to end.

A *group* is one prompt and the K completions judged together: a comparison (K = 2, the chosen
first), a ranking (K completions with ranks), the ratings of one prompt (`rating_pairs`), or one
rated / labelled completion (pointwise losses). Every completion is tokenized once; a `Layout`
says which pairs, ranks or targets index the flat vector of N per-completion numbers (rewards for
the reward model, sequence log-probs for DPO and RRHF).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rlhf.config.core import ConfigError
from rlhf.data import (
    Comparison,
    DataError,
    Label,
    PromptRenderer,
    Ranking,
    Rating,
    TruncationStats,
    encode_example,
)
from rlhf.losses.reward import PairBatch, Ties, concat_pairs, normalize_ratings, ranking_pairs, rating_pairs

LossName = Literal["auto", "pairwise", "plackett_luce", "regression", "rating_pairs", "label"]

ALLOWED_LOSSES: dict[str, tuple[str, ...]] = {
    "comparison": ("pairwise", "plackett_luce"),
    "ranking": ("pairwise", "plackett_luce"),
    "rating": ("regression", "rating_pairs"),
    "label": ("label",),
}
"""Losses each record kind supports; the first is what `loss_type: auto` picks."""

DEFAULT_POSITIVE = ("good", "okay", "safe", "true", "yes", "chosen", "1", "positive", "acceptable")
DEFAULT_NEGATIVE = ("bad", "harmful", "unsafe", "false", "no", "rejected", "0", "negative", "unacceptable")


def resolve_loss(loss: str, kind: str) -> str:
    """The loss to train with for records of `kind` (`auto` -> the kind's natural loss)."""
    allowed = ALLOWED_LOSSES.get(kind)
    if allowed is None:
        raise ConfigError(f"reward models train on comparison, ranking, rating or label data, not {kind}")
    if loss == "auto":
        return allowed[0]
    if loss not in allowed:
        raise ConfigError(
            f"`loss_type: {loss}` does not fit {kind} data; use {' or '.join(allowed)} (or auto)"
        )
    return loss


def loss_mode(loss: str) -> str:
    """How a resolved loss reads a batch: `pairwise` (rating_pairs too), `plackett_luce`,
    `regression` or `label`."""
    return "pairwise" if loss == "rating_pairs" else loss


@dataclass
class Group:
    """One prompt and the completions judged together."""

    prompt: str
    """The rendered prompt text."""
    input_ids: list[list[int]]
    """K sequences: prompt + completion + EOS, each completion encoded once."""
    ranks: list[float] | None = None
    """(K,) pairwise / plackett_luce: lower is better (a comparison is [0, 1])."""
    margin: float | None = None
    """A comparison's required reward gap, from the data (only when margins are on)."""
    ratings: list[float] | None = None
    """(K,) rating_pairs: ratings normalized to [0, 1]; higher is better."""
    margin_scale: float = 0.0
    """rating_pairs: margin = margin_scale x difference of normalized ratings (0: none)."""
    targets: list[float] | None = None
    """(K,) pointwise: regression targets in [0, 1] or binary labels."""
    weight: float = 1.0
    """The row's weight (comparisons and rankings; pairwise loss): its pairs count this much."""
    prompt_lens: list[int] | None = None
    """(K,) tokens of each sequence that belong to the prompt (the rest is the completion + EOS);
    the policy stages (DPO, RRHF) read log-probabilities of the completion tokens only."""

    def need(self, name: Literal["ranks", "ratings", "targets"]) -> list[float]:
        """Field `name`, which the group's loss mode guarantees is set."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"a group of {self.prompt!r} has no `{name}`, which its loss needs")
        return value


def label_targets(positive: list[str] | None, negative: list[str] | None) -> dict[str, float]:
    """Lower-cased label -> 1.0 / 0.0; the default pairs when neither list is given."""
    if (positive is None) != (negative is None):
        raise ConfigError("set both `positive_labels` and `negative_labels`, or neither (defaults)")
    pos = DEFAULT_POSITIVE if positive is None else positive
    neg = DEFAULT_NEGATIVE if negative is None else negative
    mapping = {str(label).strip().lower(): 1.0 for label in pos}
    for label in neg:
        key = str(label).strip().lower()
        if key in mapping:
            raise ConfigError(f"label {label!r} is both in `positive_labels` and `negative_labels`")
        mapping[key] = 0.0
    return mapping


def _label_target(record: Label, mapping: dict[str, float]) -> float:
    target = mapping.get(record.label.strip().lower())
    if target is None:
        pos = [k for k, v in mapping.items() if v == 1.0]
        neg = [k for k, v in mapping.items() if v == 0.0]
        raise DataError.at(
            record.source,
            "label",
            f"unknown label {record.label!r}; positive: {', '.join(pos)}; negative: {', '.join(neg)} "
            "(set `positive_labels` / `negative_labels`)",
        )
    return target


def build_groups(
    records: list,
    loss: str,
    renderer: PromptRenderer,
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_length: int | None = None,
    use_margin: bool = True,
    rating_scale: tuple[float, float] | None = None,
    labels: dict[str, float] | None = None,
) -> tuple[list[Group], TruncationStats]:
    """Template and tokenize `records` (all of one kind) into groups for the resolved `loss`."""
    stats = TruncationStats(max_length)
    prompt_lens: dict[int, list[int]] = {}  # id(input_ids list) -> prompt lengths, attached below

    def encode(prompt: str, completions: list[str]) -> list[list[int]]:
        examples = [encode_example(tokenizer, prompt, c, max_length, max_prompt_length) for c in completions]
        stats.add(*examples)
        ids = [e.input_ids for e in examples]
        prompt_lens[id(ids)] = [e.prompt_len for e in examples]
        return ids

    groups, stats = _build(records, loss, renderer, encode, stats, use_margin, rating_scale, labels)
    for group in groups:
        group.prompt_lens = prompt_lens[id(group.input_ids)]
    return groups, stats


def _build(records, loss, renderer, encode, stats, use_margin, rating_scale, labels):
    """The groups of `build_groups`, each sequence encoded through `encode`."""
    if loss == "rating_pairs":
        return _rating_groups(records, renderer, encode, rating_scale, use_margin), stats
    groups = []
    for record in records:
        prompt = renderer.render(record.prompt)
        if isinstance(record, Comparison):
            margin = record.margin if use_margin else None
            pair = encode(prompt, [record.chosen, record.rejected])
            groups.append(Group(prompt, pair, [0.0, 1.0], margin, weight=record.weight))
        elif isinstance(record, Ranking):
            ranks = [float(r) for r in record.ranks]
            groups.append(
                Group(prompt, encode(prompt, list(record.completions)), ranks, weight=record.weight)
            )
        elif isinstance(record, Rating):
            target = normalize_ratings([record.rating], _scale(rating_scale)).tolist()
            groups.append(Group(prompt, encode(prompt, [record.completion]), targets=target))
        elif isinstance(record, Label):
            target = _label_target(record, labels if labels is not None else label_targets(None, None))
            groups.append(Group(prompt, encode(prompt, [record.completion]), targets=[target]))
        else:
            raise ConfigError(f"reward models cannot train on {record.kind} records")
    return groups, stats


def _scale(rating_scale: tuple[float, float] | None) -> tuple[float, float]:
    if rating_scale is None:
        raise ConfigError("rating data needs its scale: set `data.rating_scale: [low, high]`")
    return (float(rating_scale[0]), float(rating_scale[1]))


def _rating_groups(records, renderer, encode, rating_scale, use_margin: bool) -> list[Group]:
    """Ratings grouped by identical rendered prompt (first-seen order), one group per prompt."""
    by_prompt: dict[str, tuple[list[str], list[float]]] = {}
    for record in records:
        prompt = renderer.render(record.prompt)
        completions, ratings = by_prompt.setdefault(prompt, ([], []))
        completions.append(record.completion)
        ratings.append(record.rating)
    scale = _scale(rating_scale)
    return [
        Group(
            prompt,
            encode(prompt, completions),
            ratings=normalize_ratings(ratings, scale).tolist(),
            margin_scale=1.0 if use_margin else 0.0,
        )
        for prompt, (completions, ratings) in by_prompt.items()
    ]


@dataclass
class Layout:
    """What to learn from a list of groups laid end to end in a flat reward vector (N,)."""

    offsets: list[int]
    """Where each group's first completion sits in the flat vector."""
    pairs: PairBatch | None = None
    """pairwise modes (and for metrics of plackett_luce): pairs indexing the flat vector."""
    ranks: list[list[float]] | None = None
    """Ranks of every group (rank-based groups only)."""
    targets: torch.Tensor | None = None
    """(N,) float32 pointwise targets."""
    count: int = 0
    """Weight units: groups with a counted pair (pairwise), ordered groups (plackett_luce),
    completions (pointwise)."""
    pair_counts: list[int] = field(default_factory=list)
    """Pairs each group contributes (pairwise)."""
    counted: list[bool] = field(default_factory=list)
    """Per group: whether it is among the `count` weight units (pointwise: every one-completion group)."""
    weight_sum: float = 0.0
    """Σ of the counted groups' row weights (= `count` when no row has a weight): the loss is a
    weighted mean, and `weight_sum / step's count` turns it into this batch's share of the step."""

    def need_pairs(self) -> PairBatch:
        """`pairs`, which pairwise and plackett_luce layouts always have."""
        if self.pairs is None:
            raise ValueError("a pointwise layout has no pairs")
        return self.pairs

    def need_ranks(self) -> list[list[float]]:
        """`ranks`, which layouts of ranked groups always have."""
        if self.ranks is None:
            raise ValueError("a layout of unranked groups has no ranks")
        return self.ranks

    def need_targets(self) -> torch.Tensor:
        """`targets`, which pointwise layouts always have."""
        if self.targets is None:
            raise ValueError("a pairwise layout has no pointwise targets")
        return self.targets


def layout_groups(groups: list[Group], mode: str, ties: Ties = "skip") -> Layout:
    """Offsets and training targets of `groups` in a flat vector, for a `loss_mode`."""
    offsets, at = [], 0
    for group in groups:
        offsets.append(at)
        at += len(group.input_ids)
    out = Layout(offsets)
    if mode in ("regression", "label"):
        out.targets = torch.tensor([t for g in groups for t in g.need("targets")], dtype=torch.float32)
        out.count = at
        out.counted = [True] * len(groups)
        out.weight_sum = float(at)
        return out
    parts = [_group_pairs(g, start, ties) for g, start in zip(groups, offsets)]
    out.pair_counts = [len(p) for p in parts]
    out.pairs = concat_pairs(*parts) if parts else _no_pairs()
    ranks = [g.ranks for g in groups if g.ranks is not None]
    if len(ranks) == len(groups):
        out.ranks = ranks
    if mode == "plackett_luce":
        if any(g.weight != 1.0 for g in groups):
            raise ConfigError("rows with a `weight` train with `loss_type: pairwise`, not plackett_luce")
        out.counted = [len(set(g.need("ranks"))) > 1 for g in groups]
    else:
        out.counted = [n > 0 for n in out.pair_counts]
    out.count = sum(out.counted)
    out.weight_sum = float(sum(g.weight for g, kept in zip(groups, out.counted) if kept))
    return out


def _group_pairs(group: Group, start: int, ties: Ties) -> PairBatch:
    if group.ratings is not None:
        return rating_pairs(
            [group.ratings], (0.0, 1.0), margin_scale=group.margin_scale, ties=ties, offsets=[start]
        )
    pairs = ranking_pairs([group.need("ranks")], ties=ties, offsets=[start])
    pairs.weight = pairs.weight * group.weight
    if group.margin is not None:
        pairs.margin = torch.full((len(pairs),), float(group.margin), dtype=torch.float32)
    return pairs


def _no_pairs() -> PairBatch:
    empty = torch.zeros(0, dtype=torch.long)
    return PairBatch(empty, empty.clone(), torch.zeros(0))
