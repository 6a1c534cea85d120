"""Read raw rows (plain dicts) from any data source, each tagged with the file and line it came from.

Sources: a file (`.jsonl`/`.ndjson`, `.json`, `.csv`, `.parquet`, the first three also compressed;
read by `rlhf.data.file_rows`), a directory written by `datasets.save_to_disk`, a local copy of a
hub dataset's files, a directory of data files of one format (read file by file), or a hub dataset
id. Files are read once, row by row; only a JSON array is held whole (it is one JSON value).

Problems confined to one row (bad JSON on a JSONL line, a non-object element, a CSV row with the
wrong number of cells, bytes that are not UTF-8 on one line) are *yielded* in place of the row by
`iter_rows`, so a loader running with `on_error: skip` can go on. Problems that spoil the rest of
the source (missing file, broken JSON array, unreadable parquet) are raised.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlhf.data.errors import DataError
from rlhf.data.file_rows import COMPRESSIONS, FILE_TYPES, Row, first_line, read_file
from rlhf.data.records import Source

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def read_rows(
    source: str | Path, split: str = "train", subset: str | None = None
) -> Iterator[tuple[Source, Row]]:
    """Every row of `source` with its `Source`; the first problem of any kind is raised as DataError."""
    for where, row in iter_rows(source, split, subset):
        if isinstance(row, DataError):
            raise row
        yield where, row


def iter_rows(
    source: str | Path, split: str = "train", subset: str | None = None
) -> Iterator[tuple[Source, Row | DataError]]:
    """Like `read_rows`, but a problem confined to one row is yielded in its place instead of raised.
    `subset`: the configuration of a hub dataset (or of a local copy of one) that has several."""
    name = str(source)
    path = Path(name).expanduser()
    if path.is_dir():
        yield from _datasets_dir_rows(name, path, split, subset)
        return
    suffix = path.suffix.lower()
    if path.is_file():
        inner = Path(path.stem).suffix.lower() if suffix in COMPRESSIONS else suffix
        reader = FILE_TYPES.get(inner)
        if reader is None or (reader == "parquet" and inner != suffix):
            known = ", ".join(FILE_TYPES)
            shown = f"{inner}{suffix}" if inner != suffix else suffix or "(none)"
            raise DataError(
                name, None, None,
                f"unsupported file type `{shown}`; expected one of {known}, the first three also compressed "
                f"({', '.join(COMPRESSIONS)})",
            )  # fmt: skip
        yield from read_file(name, path, reader)
        return
    if path.exists():
        raise DataError(
            name,
            None,
            None,
            "not a regular file (a named pipe, device or socket): give a file or a directory",
        )
    if path.is_symlink():
        raise DataError(name, None, None, _broken_link(path))
    if suffix in FILE_TYPES or not _HUB_ID.match(name):
        raise DataError(name, None, None, "file not found")
    yield from _hub_rows(name, split, subset)


def _broken_link(path: Path) -> str:
    """Why the symbolic link `path` leads to nothing: a loop, or a target that does not exist."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"a symbolic link that loops ({' -> '.join(_link_chain(path))}): point it at a file"
    return f"a symbolic link to {os.readlink(path)}, which does not exist"


def _link_chain(path: Path, limit: int = 6) -> list[str]:
    """`path` and the links it leads through, until one repeats (or `limit`)."""
    chain, seen = [str(path)], {os.path.abspath(path)}
    while len(chain) <= limit and os.path.islink(path):
        path = Path(os.path.join(os.path.dirname(path), os.readlink(path)))
        chain.append(os.path.normpath(str(path)))
        if os.path.abspath(path) in seen:
            break
        seen.add(os.path.abspath(path))
    return chain


def _datasets_dir_rows(
    name: str, path: Path, split: str, subset: str | None
) -> Iterator[tuple[Source, Row | DataError]]:
    """A directory saved by `datasets` (`save_to_disk`), or a local copy of a hub dataset's files
    (its README's configurations, or data files `datasets` finds by their names and folders)."""
    import datasets

    if not ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        files = _flat_data_files(name, path)
        if files is None:  # a copy of a hub dataset's files (configurations, split folders)
            yield from _hub_rows(name, split, subset, local=True)
            return
        if subset is not None:
            raise DataError(
                name, None, None, f"a directory of data files has no subsets; drop `data.subset: {subset}`"
            )
        for file in _split_files(name, files, split):
            yield from iter_rows(file)
        return
    if subset is not None:
        raise DataError(
            name, None, None, f"a dataset saved by `datasets` has no subsets; drop `data.subset: {subset}`"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as err:
        raise DataError(name, None, None, f"cannot load the saved dataset: {first_line(err)}") from None
    yield from _dataset_rows(name, _pick_split(name, loaded, split))


NOT_DATA = (".md", ".yaml", ".yml", ".py", ".lock", ".gitattributes", ".gitignore", "")
"""Suffixes of the files beside data files that hold none (README.md, LICENSE, a loading script)."""
SPLIT_WORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
"""Words in a file's name that put it in a split, as `datasets` reads them."""


def _flat_data_files(name: str, path: Path) -> list[Path] | None:
    """The data files of a directory that holds them side by side, all of one format rlhf reads;
    None for the layout of a hub dataset's copy (a README with `configs:`, or data in subfolders).
    Files of several formats, or of one rlhf does not read, are one line naming them."""
    readme = path / "README.md"
    if readme.is_file() and re.search(r"^configs:", readme.read_text(errors="replace"), re.MULTILINE):
        return None
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if any(p.is_dir() for p in entries):
        return None
    by_type: dict[str, list[Path]] = {}
    for file in entries:
        suffix = file.suffix.lower()
        inner = Path(file.stem).suffix.lower() if suffix in COMPRESSIONS else suffix
        if suffix in NOT_DATA and inner == suffix:
            continue
        by_type.setdefault(FILE_TYPES.get(inner, inner or suffix), []).append(file)
    unread = {kind: files for kind, files in by_type.items() if kind not in FILE_TYPES.values()}
    if unread or len(by_type) > 1:
        listed = "; ".join(", ".join(f.name for f in files[:3]) for files in by_type.values())
        why = "files rlhf does not read" if unread else "data files of several formats"
        raise DataError(
            name,
            None,
            None,
            f"the directory holds {why} ({listed}); give one file, or a directory of files of one "
            f"format ({', '.join(FILE_TYPES)}, also compressed)",
        )
    if not by_type:
        raise DataError(name, None, None, f"the directory holds no data files ({', '.join(FILE_TYPES)})")
    return next(iter(by_type.values()))


def _split_files(name: str, files: list[Path], split: str) -> list[Path]:
    """The files of `split`, by the split words in their names (all of them for `train` when no
    name has one)."""
    tokens = {file: set(re.split(r"[-_.\s]+", file.name.lower())) for file in files}
    splits = {
        file: next((s for s, words in SPLIT_WORDS.items() if tokens[file] & set(words)), None)
        for file in files
    }
    if all(s is None for s in splits.values()):
        if split == "train":
            return files
        raise DataError(
            name, None, None, f"no file of split `{split}` (no file names a split); set `data.split: train`"
        )
    unnamed = [file.name for file, s in splits.items() if s is None]
    if unnamed:
        raise DataError(
            name,
            None,
            None,
            f"some file names name a split and some do not ({', '.join(unnamed[:3])}); name each file's "
            "split (train..., validation..., test...) or give one file",
        )
    chosen = [file for file, s in splits.items() if s == split]
    if not chosen:
        found = ", ".join(sorted({s for s in splits.values() if s}))
        raise DataError(name, None, None, f"split `{split}` not found (available: {found}); set `data.split`")
    return chosen


def _hub_rows(
    name: str, split: str, subset: str | None, *, local: bool = False
) -> Iterator[tuple[Source, Row | DataError]]:
    """A hub dataset (or a local directory of one) through `datasets.load_dataset`."""
    import datasets

    try:
        loaded = datasets.load_dataset(name, subset, split=split)
    except Exception as err:  # network, auth, unknown id, subset or split all surface differently
        what = (
            "reading the directory as a dataset (not one saved by `datasets`: no state.json)"
            if local
            else "no such local file or directory, and loading it as a hub dataset"
        )
        text = " ".join(str(err).split())  # `datasets` writes several lines
        hint = "; set `data.subset`" if "config" in text.lower() and subset is None else ""
        raise DataError(
            name, None, None, f"{what} failed: {type(err).__name__}: {text[:300]}{hint}"
        ) from None
    yield from _dataset_rows(name, loaded)


def _pick_split(name: str, loaded: Any, split: str) -> Any:
    """The requested split of a DatasetDict; a plain Dataset is used as it is."""
    if not hasattr(loaded, "keys"):
        return loaded
    if split not in loaded:
        available = ", ".join(sorted(loaded.keys())) or "none"
        raise DataError(
            name, None, None, f"split `{split}` not found (available: {available}); set `data.split`"
        )
    return loaded[split]


def _dataset_rows(name: str, dataset: Iterable[Row]) -> Iterator[tuple[Source, Row | DataError]]:
    for index, row in enumerate(dataset, start=1):
        yield Source(name, index), dict(row)
