"""Which pairs of candidates to spend a label budget on.

People's time is the scarcest input of RLHF, so a round asks them about the pairs the current
reward model knows least about. Every rule sees the same pool, the distinct non-empty pairs of
each prompt's candidates (`pair_candidates`), and picks `budget` of them:

    random        a seeded sample: the baseline every other rule must beat
    uncertainty   the pairs whose predicted preference P(a > b) = sigmoid(r(a) - r(b)), averaged
                  over the reward models given, is closest to 1/2
    disagreement  the pairs whose predicted preference varies most across an ensemble of reward
                  models (its standard deviation; needs two or more)

`per_prompt` caps the pairs taken from one prompt, so the budget spreads over prompts. Ties are
broken by the seeded random order, so a rule with nothing to go on is the random rule. Plain
Python: the scores come from any reward source (`score_candidates`).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlhf.data.text import seen_as

RULES = ("random", "uncertainty", "disagreement")


@dataclass(frozen=True)
class ChosenPair:
    """One pair of a prompt's candidates picked for labeling, with what the rule saw."""

    prompt: int
    """Index of the prompt (its candidate set) in the pool."""
    a: int
    """Index of the first candidate within the prompt's candidates (a < b)."""
    b: int
    """Index of the second candidate."""
    preference: float | None
    """Mean predicted P(a preferred over b) over the reward models; None without scores."""
    spread: float | None
    """Standard deviation of that prediction across the reward models; None with fewer than two."""


def pair_candidates(completions: Sequence[Sequence[str]]) -> list[tuple[int, int, int]]:
    """(prompt, a, b) for every pair of distinct, non-empty candidates of each prompt, a < b;
    candidates a reader sees as the same answer (`seen_as`) are not a pair."""
    pool = []
    for p, texts in enumerate(completions):
        for a in range(len(texts)):
            for b in range(a + 1, len(texts)):
                if texts[a].strip() and texts[b].strip() and seen_as(texts[a]) != seen_as(texts[b]):
                    pool.append((p, a, b))
    return pool


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def choose_pairs(
    completions: Sequence[Sequence[str]],
    scores: Sequence[Sequence[Sequence[float]]] | None,
    *,
    rule: str,
    budget: int,
    seed: int = 0,
    per_prompt: int | None = None,
) -> list[ChosenPair]:
    """Up to `budget` pairs of the pool by `rule`, in the order the rule ranks them.

    completions: [prompt][candidate] texts. scores: [reward model][prompt][candidate] rewards, or
    None (then only `random` is possible)."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; rules are {', '.join(RULES)}")
    if budget < 1 or (per_prompt is not None and per_prompt < 1):
        raise ValueError(f"the label budget and per-prompt cap must be positive, got {budget}, {per_prompt}")
    models = len(scores) if scores is not None else 0
    if rule != "random" and models < (2 if rule == "disagreement" else 1):
        raise ValueError(
            f"rule {rule!r} needs {'two or more reward models' if rule == 'disagreement' else 'a reward model'}"
        )
    pool = pair_candidates(completions)
    random.Random(seed).shuffle(pool)  # the tie-break order, and the whole order of `random`
    measured = [_measure(scores, p, a, b) for p, a, b in pool]
    if rule == "uncertainty":
        order = sorted(range(len(pool)), key=lambda i: abs(measured[i][0] - 0.5))  # type: ignore[operator]
    elif rule == "disagreement":
        order = sorted(range(len(pool)), key=lambda i: -measured[i][1])  # type: ignore[operator]
    else:
        order = list(range(len(pool)))
    taken: dict[int, int] = {}
    chosen = []
    for i in order:
        p, a, b = pool[i]
        if per_prompt is not None and taken.get(p, 0) >= per_prompt:
            continue
        taken[p] = taken.get(p, 0) + 1
        chosen.append(ChosenPair(p, a, b, *measured[i]))
        if len(chosen) == budget:
            break
    return chosen


def _measure(
    scores: Sequence[Sequence[Sequence[float]]] | None, p: int, a: int, b: int
) -> tuple[float | None, float | None]:
    """(mean, standard deviation) over the reward models of P(a > b)."""
    if not scores:
        return None, None
    predicted = [_sigmoid(model[p][a] - model[p][b]) for model in scores]
    return statistics.fmean(predicted), (statistics.pstdev(predicted) if len(predicted) > 1 else None)


def score_candidates(
    sources: Sequence[Any], prompts: Sequence[Any], completions: Sequence[Sequence[str]]
) -> list[list[list[float]]]:
    """[source][prompt][candidate] rewards of every candidate by each reward source (see
    `rlhf.rewards.sources`: a reward model, a function, an endpoint); one call per source."""
    flat_prompts = [prompt for prompt, texts in zip(prompts, completions) for _ in texts]
    flat = [text for texts in completions for text in texts]
    out = []
    for source in sources:
        rewards = source(flat_prompts, flat).rewards
        it = iter(rewards)
        out.append([[float(next(it)) for _ in texts] for texts in completions])
    return out
