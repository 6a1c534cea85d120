"""When two texts are the same to a reader: what a person sees, not the code points stored."""

from __future__ import annotations

import re
import unicodedata

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
