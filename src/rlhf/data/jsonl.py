"""Writing records as JSON lines: prompts as the data formats hold them, and whole files at once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhf.data.errors import DataError
from rlhf.data.records import Prompt


def prompt_to_json(prompt: Prompt) -> str | list[dict[str, str]]:
    """A prompt as the data formats write it: text, or a list of {role, content}."""
    if isinstance(prompt, str):
        return prompt
    return [{"role": message.role, "content": message.content} for message in prompt]


def prompts_to_json(prompts: Sequence[Prompt]) -> list[str | list[dict[str, str]]]:
    """Prompts as plain JSON values: text stays text, messages become [{"role", "content"}, ...]."""
    return [prompt_to_json(prompt) for prompt in prompts]


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def read_jsonl(path: Path) -> list[dict[str, Any]] | None:
    """One dict per non-blank line, or None when the file does not exist.

    A line that is not a JSON object raises DataError naming the file and its 1-based line: a
    report drawn from a silently shortened log would mislead.
    """
    text = read_text(path)
    if text is None:
        return None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                str(path), number, None, f"not valid JSON: {err.msg} (column {err.colno})"
            ) from None
        if not isinstance(row, dict):
            raise DataError(str(path), number, None, f"expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows
