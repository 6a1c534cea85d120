"""Text as people read it and as files hold it: when two texts are the same to a reader (what a
person sees, not the code points stored), and text that cannot be stored at all (lone surrogates)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_SPACE = re.compile(r"\s+")


def invisible_characters(text: str) -> list[str]:
    """The characters of `text` a reader does not see as themselves: Unicode format characters
    (category Cf: zero-width spaces and joiners, bidi embeddings, overrides and isolates, the BOM,
    the soft hyphen), in order of appearance, each once."""
    seen: list[str] = []
    for char in text:
        if unicodedata.category(char) == "Cf" and char not in seen:
            seen.append(char)
    return seen


def seen_as(text: str) -> str:
    """`text` as a reader sees it: NFKC-normalized (composed accents, full-width forms), format
    characters removed, every run of whitespace one space, no space at either end. Two completions
    with the same `seen_as` are the same answer, however their bytes differ."""
    normal = unicodedata.normalize("NFKC", text)
    visible = "".join(char for char in normal if unicodedata.category(char) != "Cf")
    return _SPACE.sub(" ", visible).strip()


def lone_surrogate(text: str) -> int | None:
    """The position of the first lone UTF-16 surrogate in `text` (JSON's `\\ud800` escapes decode to
    one; so do bytes that are not UTF-8 in a command-line argument), or None when it has none.
    Such a character cannot be written as UTF-8: a file or page holding it cannot be saved."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def surrogate_message(text: str, position: int) -> str:
    """What is wrong with `text`, whose character at `position` is a lone surrogate."""
    return (
        f"holds U+{ord(text[position]):04X} at character {position}, half of a UTF-16 surrogate pair "
        "with no other half (a broken \\u escape): not text that can be stored or read back"
    )


def broken_text(value: Any, where: str = "") -> str | None:
    """The first string in a JSON value (keys included) that holds a lone surrogate, as
    '`<field path>` <what is wrong>' (`answer.feedback`, `completions[1]`); None when there is none."""
    found = broken_field(value, where)
    if found is None:
        return None
    return f"`{found[0]}` {found[1]}" if found[0] else found[1]


def broken_field(value: Any, where: str = "") -> tuple[str | None, str] | None:
    """(field path, what is wrong) of the first string in a JSON value, keys included, that holds a
    lone surrogate (the path is None for a key of the value itself); None when there is none.
    `where`: the path of `value` itself."""
    if isinstance(value, str):
        position = lone_surrogate(value)
        return None if position is None else (where or "value", surrogate_message(value, position))
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and (position := lone_surrogate(key)) is not None:
                return (where or None, f"a field name {surrogate_message(key, position)}")
            found = broken_field(item, name)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = broken_field(item, f"{where}[{index}]")
            if found:
                return found
    return None


def repair_text(value: Any) -> tuple[Any, int]:
    """`value` (a JSON value) with every lone surrogate replaced by U+FFFD, and how many strings
    held one: for text stored before it was refused, so that it can still be written out."""
    if isinstance(value, str):
        if lone_surrogate(value) is None:
            return value, 0
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value), 1
    if isinstance(value, dict):
        out, count = {}, 0
        for key, item in value.items():
            new_key, k = repair_text(key)
            out[new_key], n = repair_text(item)
            count += k + n
        return out, count
    if isinstance(value, list):
        pairs = [repair_text(item) for item in value]
        return [item for item, _ in pairs], sum(n for _, n in pairs)
    return value, 0
