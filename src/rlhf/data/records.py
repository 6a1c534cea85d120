"""The normalized records every loader produces, whatever the file format.

A stage never sees a file's own field names: it sees `Demonstration`, `Comparison`, `Ranking`,
`Candidates`, `Rating`, `Label`, `Correction`, `Feedback` or `PromptOnly`. Each record keeps its
`Source` (file and line) so any later problem, e.g. a sequence that had to be truncated, can be
traced back to the row a person wrote.

Records are frozen: a loader builds them once and nothing downstream edits them in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

ROLES = ("system", "user", "assistant")
"""The three roles every message is normalized to."""


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: str
    """`system`, `user` or `assistant` (file spellings such as `human`, `gpt`, `prompter` are mapped)."""
    content: str
    """The turn's text, exactly as in the file."""


@dataclass(frozen=True)
class Source:
    """Where a record came from, so errors and reports can point at it."""

    path: str
    """The file, directory or hub dataset id, as the user gave it."""
    line: int
    """1-based position: the line in a JSONL file; the line where the element starts in a JSON
    array; the line where the row starts in a CSV file (the header is line 1); the row index + 1
    in a parquet file, a `datasets` directory or a hub dataset."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


Prompt = str | tuple[Message, ...]
"""Raw prompt text, or the chat messages that precede the completion (oldest first)."""


@dataclass(frozen=True)
class Demonstration:
    """A prompt and the completion a model should learn to write (SFT)."""

    kind: ClassVar[str] = "demonstration"
    prompt: Prompt
    """What the completion answers; "" for plain text."""
    completion: str
    """The target text (the final assistant turn for chat data)."""
    source: Source
    """File and line of the row."""
    plain_text: bool = False
    """True for `text` rows: no prompt, the whole text is the completion."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Fields of the source row the format does not use (ids, languages, ...)."""


@dataclass(frozen=True)
class Comparison:
    """Two completions of one prompt, one preferred over the other."""

    kind: ClassVar[str] = "comparison"
    prompt: Prompt
    """What both completions answer."""
    chosen: str
    """The preferred completion."""
    rejected: str
    """The completion judged worse; never identical to `chosen`."""
    source: Source
    """File and line of the row."""
    margin: float | None = None
    """How strongly `chosen` is preferred, when the data says (e.g. a score difference)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Fields of the source row the format does not use."""
    weight: float = 1.0
    """How much the row counts in the reward model's loss (the row's `weight`, e.g. 1 / judgments
    of its item in a labeling export that keeps every judgment)."""


@dataclass(frozen=True)
class Ranking:
    """Several completions of one prompt, ordered by people."""

    kind: ClassVar[str] = "ranking"
    prompt: Prompt
    """What every completion answers."""
    completions: list[str]
    """At least two completions."""
    ranks: list[int | float]
    """One rank per completion, same order; lower is better (0 or 1 = best); equal ranks are ties."""
    source: Source
    """File and line of the row (for message trees: the tree's row)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Fields of the source row the format does not use (for message trees: tree and parent ids)."""
    weight: float = 1.0
    """How much the row counts in the reward model's loss (the row's `weight`; pairwise loss only)."""

    def pairs(self) -> list[tuple[int, int]]:
        """(better, worse) index pairs for every two completions with different ranks."""
        out = []
        for i, rank_i in enumerate(self.ranks):
            for j, rank_j in enumerate(self.ranks):
                if rank_i < rank_j:
                    out.append((i, j))
        return out


@dataclass(frozen=True)
class Candidates:
    """Completions of one prompt not judged yet: what `rlhf generate` writes for people to compare."""

    kind: ClassVar[str] = "candidates"
    prompt: Prompt
    """What every completion answers."""
    completions: list[str]
    """At least one completion, in the order they were drawn; may repeat and may be empty text (a
    model can answer with nothing, and a person can still rank that last)."""
    source: Source
    """File and line of the row."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Fields of the source row the format does not use (`rendered_prompt`, ids, ...)."""


@dataclass(frozen=True)
class Rating:
    """A completion with a scalar score on a known scale."""

    kind: ClassVar[str] = "rating"
    prompt: Prompt
    """What the completion answers."""
    completion: str
    """The rated text."""
    rating: float
    """The score, inside `data.rating_scale` (checked at load time)."""
    source: Source
    """File and line of the row."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Fields of the source row the format does not use."""


@dataclass(frozen=True)
class Label:
    """A completion with a categorical judgment (e.g. `good`/`bad`, `true`/`false`)."""

    kind: ClassVar[str] = "label"
    prompt: Prompt
    """What the completion answers."""
    completion: str
    """The labelled text."""
    label: str
    """The category, as text (booleans become `true`/`false`, integers their digits)."""
    source: Source
    """File and line of the row."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Fields of the source row the format does not use."""


@dataclass(frozen=True)
class Correction:
    """A completion and a person's improved version of it."""

    kind: ClassVar[str] = "correction"
    prompt: Prompt
    """What the completion answers."""
    completion: str
    """The original model output."""
    correction: str
    """The corrected text a person wrote."""
    source: Source
    """File and line of the row."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Fields of the source row the format does not use."""


@dataclass(frozen=True)
class Feedback:
    """A completion with free-text critique."""

    kind: ClassVar[str] = "feedback"
    prompt: Prompt
    """What the completion answers."""
    completion: str
    """The judged text."""
    feedback: str
    """The critique, in words."""
    source: Source
    """File and line of the row."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Fields of the source row the format does not use."""


@dataclass(frozen=True)
class PromptOnly:
    """A prompt with no completion (RL rollouts generate the completion)."""

    kind: ClassVar[str] = "prompt"
    prompt: Prompt
    """The prompt text or messages."""
    source: Source
    """File and line of the row."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Fields of the source row the format does not use."""


Record = (
    Demonstration | Comparison | Ranking | Candidates | Rating | Label | Correction | Feedback | PromptOnly
)
"""Any normalized record; `record.kind` tells which."""

KINDS = (
    "demonstration", "comparison", "ranking", "candidates", "rating", "label", "correction", "feedback", "prompt",
)  # fmt: skip
"""Every record kind, in the order `rlhf data formats` lists them."""
