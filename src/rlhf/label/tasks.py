"""What a labeling project asks, and turning an annotator's answer into the stored, canonical form.

Questions (several may be asked on one item):

    pairwise    which of two completions is better: A, B, tie, or both bad
    ranking     all K completions ordered best to worst (a permutation, no ties)
    rating      a score per completion on the project's scale
    label       a category per completion from the project's set (e.g. okay / harmful)
    correction  one completion edited into a better one
    feedback    free text about the item

The page shows completions in an order shuffled per annotator (recorded with the assignment), so
position bias can be measured and undone. Annotators answer in *display positions*; the store
keeps answers in *original completion indices*: `canonical_answer(raw, order, ...)` maps one to the
other, where `order[p]` is the original index shown at position p. Every check names the question
and what is wrong, and raises `AnswerError` (an HTTP 4xx: nothing is stored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rlhf.data.text import broken_text

QUESTION_TYPES = ("pairwise", "ranking", "rating", "label", "correction", "feedback")
PAIRWISE_CHOICES = ("A", "B", "tie", "both_bad")
MAX_TEXT = 100_000
"""Longest correction or feedback text accepted (characters)."""


class AnswerError(ValueError):
    """A submission that cannot be stored; the message says which question and why."""


@dataclass
class ProjectConfig:
    questions: list[str]
    """What is asked on every item, from `QUESTION_TYPES` (e.g. [pairwise] or [ranking, feedback])."""
    overlap: int = 1
    """Submissions each item needs, from different annotators (agreement needs 2 or more)."""
    scale: list[float] = field(default_factory=lambda: [1.0, 7.0])
    """[low, high] of the rating scale (inclusive)."""
    scale_step: float | None = 1.0
    """Ratings must be low + a multiple of this (null: any number on the scale)."""
    labels: list[str] = field(default_factory=lambda: ["okay", "harmful"])
    """The categories of the `label` question."""
    instructions: str = ""
    """Text shown to annotators above every item (plain text; shown escaped)."""
    shuffle: bool = True
    """Show completions in an order shuffled per annotator and item (recorded)."""

    def __post_init__(self) -> None:
        unknown = [q for q in self.questions if q not in QUESTION_TYPES]
        if not self.questions or unknown:
            raise ValueError(f"questions must be some of {', '.join(QUESTION_TYPES)}; got {self.questions}")
        if len(set(self.questions)) != len(self.questions):
            raise ValueError(f"a question is listed twice: {self.questions}")
        if self.overlap < 1:
            raise ValueError(f"overlap must be at least 1, got {self.overlap}")
        if len(self.scale) != 2 or not self.scale[0] < self.scale[1]:
            raise ValueError(f"scale must be [low, high] with low < high, got {self.scale}")
        if self.scale_step is not None and self.scale_step <= 0:
            raise ValueError(f"scale_step must be positive (or null), got {self.scale_step}")
        if not self.labels or len(set(self.labels)) != len(self.labels) or not all(self.labels):
            raise ValueError(f"labels must be distinct non-empty names, got {self.labels}")
        broken = broken_text({"instructions": self.instructions, "labels": self.labels})
        if broken:
            raise ValueError(broken)

    def completions_needed(self) -> tuple[int, int | None]:
        """(fewest, most) completions an item must have for these questions."""
        if "pairwise" in self.questions:
            return 2, 2
        if "ranking" in self.questions:
            return 2, None
        return 1, None


def canonical_answer(raw: Any, order: list[int], cfg: ProjectConfig, originals: list[str]) -> dict[str, Any]:
    """The answer to store, in original completion indices, after checking every question.

    `raw` maps each question of the project to the answer given in display positions:
    pairwise "A"/"B"/"tie"/"both_bad"; ranking [positions best..worst]; rating [score per position];
    label [label per position]; correction {"position": p, "text": ...}; feedback "text".
    Stored: pairwise {"verdict": ..., "better": original index or None}; ranking [original indices
    best..worst]; rating and label lists by original index; correction {"index": i, "text": ...};
    feedback the text.
    """
    n = len(order)
    if sorted(order) != list(range(n)) or n != len(originals):
        raise AnswerError("the display order of this assignment is corrupt")
    if not isinstance(raw, dict):
        raise AnswerError("an answer must be a JSON object with one entry per question")
    missing = [q for q in cfg.questions if q not in raw]
    extra = [k for k in raw if k not in cfg.questions]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"not asked: {', '.join(map(str, extra))}"] if extra else []
        )
        raise AnswerError(f"answer must cover exactly the questions {cfg.questions}: {'; '.join(parts)}")
    return {q: _answer(q, raw[q], order, cfg, originals) for q in cfg.questions}


def check_gold(gold: Any, cfg: ProjectConfig, originals: list[str]) -> dict[str, Any]:
    """A gold item's known answer in canonical form. `gold` is written like an annotator's answer
    with the completions in file order (A = the first): e.g. {"pairwise": "A"} or
    {"ranking": [2, 0, 1]}; it may cover only some of the questions (free text is not scored)."""
    if not isinstance(gold, dict) or not gold:
        raise AnswerError('gold must be an object of answers by question, e.g. {"pairwise": "A"}')
    unknown = [k for k in gold if k not in cfg.questions]
    if unknown:
        raise AnswerError(f"gold answers questions the project does not ask: {', '.join(map(str, unknown))}")
    free = [k for k in gold if k in ("correction", "feedback")]
    if free:
        raise AnswerError(f"gold cannot score free text ({', '.join(free)})")
    identity = list(range(len(originals)))
    return {q: _answer(q, value, identity, cfg, originals) for q, value in gold.items()}


def _answer(question: str, value: Any, order: list[int], cfg: ProjectConfig, originals: list[str]) -> Any:
    n = len(order)
    if question == "pairwise":
        return _pairwise(value, order)
    if question == "ranking":
        return [order[p] for p in _permutation(value, n)]
    if question == "rating":
        return _by_original(_ratings(value, n, cfg), order)
    if question == "label":
        return _by_original(_labels(value, n, cfg), order)
    if question == "correction":
        return _correction(value, order, originals)
    return _text(value, "feedback")


def _pairwise(value: Any, order: list[int]) -> dict[str, Any]:
    if len(order) != 2:
        raise AnswerError(f"pairwise: the item has {len(order)} completions, not 2")
    if value not in PAIRWISE_CHOICES:
        raise AnswerError(f"pairwise: answer must be one of {', '.join(PAIRWISE_CHOICES)}, got {value!r}")
    better = {"A": order[0], "B": order[1]}.get(value)
    return {"verdict": value, "better": better}


def _permutation(value: Any, n: int) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in value):
        raise AnswerError(f"ranking: answer must be a list of positions, got {value!r}")
    if sorted(value) != list(range(n)):
        raise AnswerError(f"ranking: must order every one of the {n} completions exactly once, got {value}")
    return value


def _ratings(value: Any, n: int, cfg: ProjectConfig) -> list[float]:
    if not isinstance(value, list) or len(value) != n:
        raise AnswerError(f"rating: answer must be a list of {n} scores, one per completion")
    low, high = cfg.scale
    out = []
    for p, score in enumerate(value):
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise AnswerError(f"rating: score {p + 1} must be a number, got {score!r}")
        if not low <= score <= high:
            raise AnswerError(f"rating: score {p + 1} is {score}, off the scale [{low:g}, {high:g}]")
        if cfg.scale_step is not None:
            steps = (score - low) / cfg.scale_step
            if abs(steps - round(steps)) > 1e-9:
                raise AnswerError(
                    f"rating: score {p + 1} is {score}, not on the scale's steps of {cfg.scale_step:g}"
                )
        out.append(float(score))
    return out


def _labels(value: Any, n: int, cfg: ProjectConfig) -> list[str]:
    if not isinstance(value, list) or len(value) != n:
        raise AnswerError(f"label: answer must be a list of {n} labels, one per completion")
    for p, label in enumerate(value):
        if label not in cfg.labels:
            raise AnswerError(f"label: label {p + 1} must be one of {', '.join(cfg.labels)}, got {label!r}")
    return list(value)


def _correction(value: Any, order: list[int], originals: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"position", "text"}:
        raise AnswerError('correction: answer must be {"position": p, "text": "..."}')
    position = value["position"]
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < len(order):
        raise AnswerError(f"correction: position must be 0..{len(order) - 1}, got {position!r}")
    text = _text(value["text"], "correction")
    index = order[position]
    if text == originals[index]:
        raise AnswerError("correction: the text is unchanged; edit the completion or skip the question")
    return {"index": index, "text": text}


def _text(value: Any, question: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AnswerError(f"{question}: answer must be non-empty text")
    if len(value) > MAX_TEXT:
        raise AnswerError(f"{question}: text is {len(value):,} characters, over the limit of {MAX_TEXT:,}")
    broken = broken_text(value, question)
    if broken:
        raise AnswerError(broken)
    return value


def _by_original(values: list, order: list[int]) -> list:
    """Values given per display position, re-indexed by original completion index."""
    out = [None] * len(order)
    for position, value in enumerate(values):
        out[order[position]] = value
    return out
