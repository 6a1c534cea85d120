"""Typed access to the fields of one raw row, with errors that name the field.

Normalizers never index a row directly: they ask a `RowView` for `text("chosen")` or
`messages("messages")`, which either returns a checked value or raises a `DataError` that says
file, line, field, what was expected and what was found. The view remembers which fields were
used, so everything else in the row can be kept as the record's `meta`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rlhf.data.errors import DataError, LoadReport, describe_value
from rlhf.data.records import Message, Prompt, Source
from rlhf.data.text import lone_surrogate, surrogate_message

ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
}
"""File spellings of message roles (case-insensitive) -> our three roles."""


@dataclass
class NormalizeContext:
    """Settings and sinks shared by every row of one load."""

    rating_scale: tuple[float, float] | None
    """[low, high] of ratings (from `data.rating_scale`); None when not set."""
    allow_ties: bool
    """Whether completions of one ranking may share a rank (`data.allow_ties`)."""
    report: LoadReport
    """Where normalizers count items they leave out of a good row."""
    attribute: str | None = None
    """Which judgment of a dataset that holds several to read (`data.attribute`); None: its default."""


class RowView:
    """One raw row and its `Source`, read field by field."""

    def __init__(self, row: dict[str, Any], source: Source) -> None:
        self.row = row
        """The raw row as read from the file."""
        self.source = source
        """Where the row came from."""
        self.used: set[str] = set()
        """Fields a normalizer has read; the others become `meta`."""

    def fail(self, field: str | None, message: str) -> DataError:
        """The error to raise for `field` of this row."""
        return DataError.at(self.source, field, message)

    def has(self, key: str) -> bool:
        """Whether the row holds `key` with a value other than null."""
        return self.row.get(key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value of an optional field."""
        self.used.add(key)
        value = self.row.get(key)
        return default if value is None else value

    def require(self, key: str) -> Any:
        """The raw value of a field that must be present and not null."""
        self.used.add(key)
        if key not in self.row:
            present = ", ".join(sorted(self.row)) or "none"
            raise self.fail(key, f"missing (the row has fields: {present})")
        value = self.row[key]
        if value is None:
            raise self.fail(key, "missing (null)")
        return value

    def text(self, key: str) -> str:
        """A required non-empty string field."""
        return check_text(self.require(key), key, self.source)

    def optional_text(self, key: str) -> str:
        """A string field that may be absent, null or empty ("" then)."""
        value = self.get(key, "")
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {describe_value(value)}")
        return check_storable(value, key, self.source)

    def number(self, key: str) -> float:
        """A required finite number (numeric text, e.g. from CSV, is accepted)."""
        return check_number(self.require(key), key, self.source)

    def optional_number(self, key: str) -> float | None:
        """A number that may be absent, null or an empty CSV cell."""
        value = self.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return check_number(value, key, self.source)

    def messages(self, key: str, role_key: str = "role", content_key: str = "content") -> tuple[Message, ...]:
        """A required non-empty list of messages ({role, content}, or e.g. {from, value})."""
        return check_messages(self.require(key), key, self.source, role_key, content_key)

    def prompt(self, key: str = "prompt") -> Prompt:
        """A prompt: non-empty text, or a non-empty list of {role, content} messages."""
        value = self.require(key)
        if isinstance(value, list):
            return check_messages(value, key, self.source)
        return check_text(value, key, self.source)

    def completion(self, key: str) -> str:
        """A completion: non-empty text, or one assistant message (as an object or a one-item list)."""
        value = self.require(key)
        if isinstance(value, dict):
            value = [value]
        if isinstance(value, list):
            messages = check_messages(value, key, self.source)
            if len(messages) != 1 or messages[0].role != "assistant":
                roles = ", ".join(m.role for m in messages)
                raise self.fail(key, f"expected text or a single assistant message, got messages ({roles})")
            return messages[0].content
        return check_text(value, key, self.source)

    def meta(self) -> dict[str, Any]:
        """The fields no normalizer read (ids, languages, ...), kept with the record."""
        return {key: value for key, value in self.row.items() if key not in self.used}


def check_text(value: Any, field: str, source: Source) -> str:
    """`value` if it is a string with something besides whitespace, else a DataError."""
    if not isinstance(value, str) or not value.strip():
        raise DataError.at(source, field, f"expected a non-empty string, got {describe_value(value)}")
    return check_storable(value, field, source)


def check_storable(value: str, field: str, source: Source) -> str:
    """`value`, unless it holds a lone surrogate (JSON's `\\ud800` escapes decode to one): text
    no tokenizer reads and no file can hold, refused at its field."""
    position = lone_surrogate(value)
    if position is not None:
        raise DataError.at(source, field, surrogate_message(value, position))
    return value


FLOAT32_MAX = 3.4028234663852886e38
"""The largest float32: numbers from data become float32 tensors (weights, ratings, margins)."""


def check_number(value: Any, field: str, source: Source) -> int | float:
    """A finite int or float that float32 holds (kept as given), or numeric text converted to float."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise DataError.at(source, field, f"expected a number, got {describe_value(value)}")
    try:
        magnitude = abs(float(number))  # an int of 400 digits overflows here
    except OverflowError:
        magnitude = math.inf
    if not magnitude <= FLOAT32_MAX:  # also NaN
        raise DataError.at(
            source,
            field,
            f"expected a finite number of at most {FLOAT32_MAX:.3g} in size, got {describe_value(value)}",
        )
    return number


def check_role(value: Any, field: str, source: Source) -> str:
    """The normalized role (`system`, `user`, `assistant`) for a file's spelling of it."""
    if not isinstance(value, str):
        raise DataError.at(source, field, f"expected a role name, got {describe_value(value)}")
    role = ROLE_ALIASES.get(value.strip().lower())
    if role is None:
        known = ", ".join(ROLE_ALIASES)
        raise DataError.at(source, field, f"unknown role {value!r}; expected one of {known}")
    return role


def check_messages(
    value: Any, field: str, source: Source, role_key: str = "role", content_key: str = "content"
) -> tuple[Message, ...]:
    """A non-empty list of message objects, each with a known role and non-empty text."""
    if not isinstance(value, list) or not value:
        raise DataError.at(
            source, field, f"expected a non-empty list of messages, got {describe_value(value)}"
        )
    messages = []
    for index, item in enumerate(value):
        messages.append(check_message(item, f"{field}[{index}]", source, role_key, content_key))
    return tuple(messages)


def check_message(
    item: Any, field: str, source: Source, role_key: str = "role", content_key: str = "content"
) -> Message:
    """One message object {role_key: ..., content_key: ...} as a `Message`."""
    if not isinstance(item, dict):
        raise DataError.at(
            source,
            field,
            f"expected a message object {{{role_key}, {content_key}}}, got {describe_value(item)}",
        )
    for key in (role_key, content_key):
        if item.get(key) is None:
            raise DataError.at(source, f"{field}.{key}", "missing")
    role = check_role(item[role_key], f"{field}.{role_key}", source)
    content = check_text(item[content_key], f"{field}.{content_key}", source)
    return Message(role, content)


def prompt_messages(prompt: Prompt) -> tuple[Message, ...]:
    """A prompt as messages: raw text becomes one user message."""
    return (Message("user", prompt),) if isinstance(prompt, str) else prompt
