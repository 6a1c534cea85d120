"""What `rlhf pipeline` remembers between runs: `<output_dir>/pipeline_state.json`, one entry per
finished stage (its fingerprint, output id, finish time and seconds), and the fingerprints themselves."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rlhf.files import write_json_atomic

STATE_FILE = "pipeline_state.json"


SUMMARY_FILE = "summary.json"
"""`<output_dir>/summary.json`: what each stage (or round) did, and the headline."""


def fingerprint_of(value: Any) -> str:
    """A short, stable hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_files(value: Any) -> list[Any]:
    """Identity (size, modification time) of the files a stage config reads through its `path` fields,
    so that changed data or a rebuilt model makes the stage run again. Directories count by the files
    directly in them (a model directory's weights and config)."""
    found: list[Any] = []
    if isinstance(value, dict):
        for key, item in sorted(value.items()):
            if key == "path" and isinstance(item, str) and item:
                found.append(_identity(Path(item)))
            else:
                found.extend(input_files(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(input_files(item))
    return found


def _identity(path: Path) -> Any:
    if path.is_file():
        stat = path.stat()
        return [str(path), stat.st_size, stat.st_mtime_ns]
    if path.is_dir():
        stats = [(f.name, f.stat()) for f in sorted(path.iterdir()) if f.is_file()]
        return [str(path), [[name, st.st_size, st.st_mtime_ns] for name, st in stats]]
    return [str(path), None]


def read_state(run: Path) -> dict[str, Any]:
    """The state file of run directory `run` ({} when missing or unreadable)."""
    try:
        state = json.loads((run / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_json(path: Path, value: Any) -> None:
    """Write `value` as JSON to `path` at once (a temporary file renamed over it)."""
    write_json_atomic(path, value)
