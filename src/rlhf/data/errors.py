"""Data errors that point at file, line and field, and the report of what a load kept and skipped.

The rule the loaders follow: nothing is dropped silently. A bad row either stops the load with a
`DataError`, or (with `data.on_error: skip`) lands in `LoadReport.skipped`; items inside a good
row that cannot become records (e.g. an unranked reply among ranked ones) are counted in
`LoadReport.left_out`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlhf.data.records import Source
    from rlhf.data.tokenize import TruncationStats

_MAX_SHOWN_LINES = 20


class DataError(ValueError):
    """A problem in the data, phrased as one line: `path:line: field `f`: what is wrong`."""

    def __init__(self, path: str | None, line: int | None, field: str | None, message: str) -> None:
        self.path = path
        """The file, directory or hub id (None when the problem is not tied to one)."""
        self.line = line
        """1-based line (or row number; see `Source.line`), None for whole-file problems."""
        self.field = field
        """The offending field, dotted for nested ones (`messages[2].role`), or None."""
        # A message must stay on one line so logs and `grep` keep it whole.
        self.message = message.replace("\r", "\\r").replace("\n", "\\n")
        """What is wrong, and what was expected."""
        super().__init__(self._render())

    @classmethod
    def at(cls, source: Source, field: str | None, message: str) -> DataError:
        """The error for a field of the row at `source`."""
        return cls(source.path, source.line, field, message)

    def __reduce__(self):
        # Rebuild from the four fields, so errors survive pickling (e.g. DataLoader workers).
        return (type(self), (self.path, self.line, self.field, self.message))

    def _render(self) -> str:
        where = self.path or "<data>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        what = f"field `{self.field}`: {self.message}" if self.field else self.message
        return f"{where}: {what}"

    def __str__(self) -> str:
        return self._render()


def describe_value(value: Any) -> str:
    """A short phrase for what a field holds, for `expected X, got <this>` messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        if value == "":
            return "an empty string"
        if not value.strip():
            return "a string of only whitespace"
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}" if value else "an empty list"
    if isinstance(value, dict):
        keys = ", ".join(sorted(map(str, value))[:6])
        return f"an object with fields ({keys})" if value else "an empty object"
    return f"a {type(value).__name__}"


def _show_lines(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:_MAX_SHOWN_LINES]))
    if len(lines) > _MAX_SHOWN_LINES:
        shown += f", ... {len(lines) - _MAX_SHOWN_LINES} more"
    return shown


_JUDGMENT_WORDS = re.compile(
    r"^(chosen|rejected|choices?|prefer\w*|better|worse|safer|winner|loser|scores?|ratings?|rated|"
    r"ranks?|ranking|ranked|labels?|labell?ed)$"
)
_CONTENT_WORDS = re.compile(r"^(answers?|responses?|completions?|outputs?|replies|reply|summar(y|ies))$")
_METADATA_WORDS = re.compile(
    r"^(index|idx|ids?|num|count|length|len|tokens|model|models|source|time|date|lang)$"
)


def looks_like_judgment(name: str) -> bool:
    """Whether a field's name suggests preference data, which a format that does not read it would
    lose: a judgment word (`score_A`, `better_response_id`, `labels`), or a completion's text
    (`response_1`, `answers`) unless the name says it is about one (`completion_index`, `response_model`)."""
    words = [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]
    if any(_JUDGMENT_WORDS.match(word) for word in words):
        return True
    return any(_CONTENT_WORDS.match(w) for w in words) and not any(_METADATA_WORDS.match(w) for w in words)


@dataclass
class LoadReport:
    """What one load read, kept, skipped and left out; `summary()` says it in one line."""

    path: str
    """The data source as the user gave it."""
    format: str | None = None
    """The format id the rows were read as (None until detected)."""
    rows_read: int = 0
    """Rows read from the source, good or bad (blank JSONL/CSV lines do not count)."""
    records_kept: int = 0
    """Records produced (one row may give several, e.g. a message tree)."""
    skipped: list[DataError] = field(default_factory=list)
    """Errors of the rows skipped under `data.on_error: skip`, in file order."""
    left_out: dict[str, int] = field(default_factory=dict)
    """Items inside good rows that did not become records, counted by reason."""
    truncation: TruncationStats | None = None
    """Set by tokenization: how many records had to be cut to `max_length`."""
    unread: dict[str, int] = field(default_factory=dict)
    """Fields of good rows the format did not read (kept with the records as metadata), by how
    many rows had them."""
    unread_judgments: list[str] = field(default_factory=list)
    """Those of `unread` whose names suggest preference data, when the format is a generic one
    (a published dataset's format knows its own extra fields)."""

    @property
    def skipped_lines(self) -> list[int]:
        """Lines (or row numbers) of the skipped rows."""
        return [err.line for err in self.skipped if err.line is not None]

    def skipped_by_problem(self) -> dict[str, int]:
        """How many rows were skipped for each kind of problem, most frequent first: the field and
        the message with its particulars (values, numbers, quoted text) left out."""
        counts: dict[str, int] = {}
        for err in self.skipped:
            message = re.sub(r" at (column|byte) \d+|,? got .*$", "", err.message.split(";")[0])
            what = re.sub(r"\s*\([^()]*\)|'[^']*'", "", message).strip(" ;:,")
            key = f"field `{err.field}`: {what}" if err.field else what
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def as_dict(self) -> dict[str, Any]:
        """What the load did, for a run's `summary.json` and its report."""
        return {
            "path": self.path, "format": self.format, "rows_read": self.rows_read,
            "records_kept": self.records_kept, "skipped": len(self.skipped),
            "skipped_lines": self.skipped_lines[:_MAX_SHOWN_LINES], "skipped_by_problem": self.skipped_by_problem(),
            "left_out": dict(self.left_out), "unread_judgments": list(self.unread_judgments),
        }  # fmt: skip

    def leave_out(self, reason: str, count: int = 1) -> None:
        """Count `count` items that a good row held but no record carries."""
        if count:
            self.left_out[reason] = self.left_out.get(reason, 0) + count

    def summary(self, with_path: bool = True) -> str:
        """One line, e.g. `pairs.jsonl: 120 rows read, 118 records kept (pairwise); 2 rows skipped (lines 7, 19)`."""
        fmt = f" ({self.format})" if self.format else ""
        where = f"{self.path}: " if with_path else ""
        parts = [f"{where}{self.rows_read} rows read, {self.records_kept} records kept{fmt}"]
        if self.skipped:
            problems = self.skipped_by_problem()
            shown = ", ".join(f"{count} {problem}" for problem, count in list(problems.items())[:3])
            more = f", {len(problems) - 3} more kinds" if len(problems) > 3 else ""
            parts.append(
                f"{len(self.skipped)} rows skipped (lines {_show_lines(self.skipped_lines)}: {shown}{more})"
            )
        for reason, count in sorted(self.left_out.items()):
            parts.append(f"left out {count} {reason}")
        if self.truncation is not None and self.truncation.truncated:
            parts.append(self.truncation.summary())
        if self.unread_judgments:
            parts.append(f"fields not read, that look like judgments: {', '.join(self.unread_judgments[:6])}")
        return "; ".join(parts)
