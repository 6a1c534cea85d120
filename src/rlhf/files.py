"""Writing files whole, and a full disk said as one line.

Every file a run hands on (a model, a checkpoint, an export, a summary) is written beside its
place and renamed into it at the end: readers never see half of one, and a failed write leaves
the earlier file (or none) and no temporary one taking up the space.

    write_jsonl_atomic(path, rows)      JSON Lines            write_json_atomic(path, value)
    with atomic_directory(target) as staging: ...             a directory (a saved model)

A full disk reaches the libraries that write each in its own words: Python's `OSError` with
errno 28 (ENOSPC) or 122 (EDQUOT, over a quota), safetensors' `SafetensorError: ... No space left
on device (os error 28)`, and torch.save's `RuntimeError: [enforce fail at inline_container.cc]
unexpected pos ...` or `PytorchStreamWriter failed writing file ...`, which never name the cause.
`writing(path)` turns each into a `DiskFullError` naming what was being written, so the command
line prints `error: no space left on device writing <path>` and exits non-zero.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
_WRITE_FAILED = ("unexpected pos", "file write failed", "failed writing file")
"""torch.save's words for a write that came up short (it does not say why)."""
LOW_SPACE_BYTES = 1 << 20
"""A write that came up short on a file system with less free space than this failed for want of it."""


class DiskFullError(OSError):
    """No space left on the device (or quota) holding `path`; one line for the user."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(errno.ENOSPC, f"no space left on device writing {path}")
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(err: BaseException, path: str | os.PathLike | None = None) -> bool:
    """Whether `err`, raised while writing `path`, means the device (or quota) is full."""
    if isinstance(err, DiskFullError):
        return True
    if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
        return True
    text = str(err)
    if any(words in text for words in _FULL_TEXT):
        return True
    if path is not None and any(words in text for words in _WRITE_FAILED):
        return free_bytes(path) < LOW_SPACE_BYTES
    return False


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system of `path` (or of its nearest existing parent)."""
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        return shutil.disk_usage(where).free
    except OSError:
        return 0


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Run the block that writes `path`; a full disk inside it is raised as `DiskFullError(path)`,
    anything else as it was."""
    try:
        yield
    except Exception as err:
        if is_disk_full(err, path):
            raise (err if isinstance(err, DiskFullError) else DiskFullError(path)) from None
        raise


def write_jsonl_atomic(
    path: str | os.PathLike, rows: Iterable[dict[str, Any]], *, allow_nan: bool = True
) -> Path:
    """Write `rows` as JSONL at `path` all at once: to a temporary file beside it, then renamed
    over it, so readers never see half a file and a failed write (a row that cannot be written, a
    full disk) leaves any old file intact and no new one. `allow_nan=False`: a NaN is an error."""
    with _atomic_file(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str, allow_nan=allow_nan) + "\n")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    """Write `value` as indented JSON at `path` all at once (see `write_jsonl_atomic`)."""
    return write_text_atomic(path, json.dumps(value, indent=2, default=str) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) at `path` all at once (see `write_jsonl_atomic`)."""
    with _atomic_file(path) as handle:
        handle.write(text)
    return Path(path)


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file to write `path`'s new content into; renamed over `path` when the block ends,
    removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with writing(path), open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces `target` (which may exist). On
    failure the temporary directory is removed (a full disk is a `DiskFullError` naming `target`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        with writing(target):
            yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a saved model is meant to be shared
    previous = None
    if target.exists():
        # A directory cannot be renamed over a non-empty one: move the old one aside first.
        previous = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, previous)
    os.rename(staging, target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def read_json_dict(path: str | Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when it is missing, unreadable or not an object (a run's
    summary files, read where a missing one means "not there yet")."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
