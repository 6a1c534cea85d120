"""Writing records as JSON lines: prompts as the data formats hold them, and whole files at once."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhf.data.records import Prompt


def prompt_to_json(prompt: Prompt) -> str | list[dict[str, str]]:
    """A prompt as the data formats write it: text, or a list of {role, content}."""
    if isinstance(prompt, str):
        return prompt
    return [{"role": message.role, "content": message.content} for message in prompt]


def write_jsonl_atomic(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write `rows` as JSONL at `path` all at once: to a temporary file beside it, then renamed
    over it, so readers never see half a file and a failed run leaves any old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def prompts_to_json(prompts: Sequence[Prompt]) -> list[str | list[dict[str, str]]]:
    """Prompts as plain JSON values: text stays text, messages become [{"role", "content"}, ...]."""
    return [prompt_to_json(prompt) for prompt in prompts]
