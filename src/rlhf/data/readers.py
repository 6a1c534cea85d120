"""Read raw rows (plain dicts) from any data source, each tagged with the file and line it came from.

Sources: `.jsonl` (also `.ndjson`), `.json` (an array of objects, or JSON Lines saved as .json),
`.csv` (header row), `.parquet`, a directory written by `datasets.save_to_disk`, or a hub dataset
id. Files are read once, row by row; only a JSON array is held whole (it is one JSON value).

Problems confined to one row (bad JSON on a JSONL line, a non-object element, a CSV row with the
wrong number of cells, bytes that are not UTF-8 on one line) are *yielded* in place of the row by
`iter_rows`, so a loader running with `on_error: skip` can go on. Problems that spoil the rest of
the source (missing file, broken JSON array, unreadable parquet) are raised.
"""

from __future__ import annotations

import bz2
import csv
import errno
import gzip
import io
import json
import lzma
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlhf.data.errors import DataError, describe_value
from rlhf.data.records import Source

Row = dict[str, Any]
FILE_TYPES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""File suffix -> reader; anything else must be a `datasets` directory or a hub id."""
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
"""Compressed JSON Lines, JSON and CSV (`train.jsonl.gz`), read as they decompress."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_TEXT_LINE_END = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"
_PARQUET_BATCH_ROWS = 1024
_CSV_CELL_LIMIT = 2**31 - 1  # the largest value a C long takes on every platform


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
        yield from _decompressed(name, _FILE_READERS[reader](name, path))
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


def _open(path: Path) -> Any:  # a binary file object (gzip, bz2, lzma, zstandard or plain)
    """The file's bytes, decompressed on the fly when its suffix says it is compressed."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    if suffix == ".zst":
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115
        return io.BufferedReader(stream)  # lines, as the other readers give
    return open(path, "rb")  # noqa: SIM115 (the readers close it)


def _decompressed(
    name: str, rows: Iterator[tuple[Source, Row | DataError]]
) -> Iterator[tuple[Source, Row | DataError]]:
    """`rows`, with a compressed file that turns out broken (truncated, not what its suffix says)
    reported in one line after the last row it gave."""
    last = 0
    try:
        for where, row in rows:
            last = where.line or last
            yield where, row
    except Exception as err:
        if (
            not isinstance(err, OSError | EOFError | lzma.LZMAError)
            and "zstd" not in type(err).__name__.lower()
        ):
            raise
        past = f" past line {last}" if last else ""
        raise DataError(name, None, None, f"cannot decompress{past}: {_first_line(err)}") from None


def _open_text(name: str, path: Path) -> Any:
    """`_open(path)`, after checking that the file is not UTF-16 or UTF-32 text (the readers
    decode UTF-8; a file in a wider encoding fails on every line, so it is said once, here)."""
    handle = _open(path)
    try:
        wide = _wide_encoding(handle.peek(64)[:64])
    except BaseException:
        handle.close()
        raise
    if wide:
        handle.close()
        raise DataError(
            name, None, None, f"the file is {wide[0]} text, not UTF-8 ({wide[1]}): re-save it as UTF-8"
        )
    return handle


_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32-LE"),
    (b"\x00\x00\xfe\xff", "UTF-32-BE"),
    (b"\xff\xfe", "UTF-16-LE"),
    (b"\xfe\xff", "UTF-16-BE"),
)


def _wide_encoding(start: bytes) -> tuple[str, str] | None:
    """(encoding, how it shows) when the first bytes of a file are UTF-16 or UTF-32 text: a
    byte-order mark, or (without one) ASCII characters padded with zero bytes, which UTF-8 text
    never has."""
    for mark, name in _BOMS:
        if start.startswith(mark):
            return name, "it starts with that encoding's byte-order mark"
    if b"\x00" not in start:
        return None
    for width in (4, 2):
        units = [start[i : i + width] for i in range(0, len(start) - width + 1, width)]
        if len(units) < 2:
            continue
        zeros = b"\x00" * (width - 1)
        if all(u[:-1] == zeros and u[-1:] != b"\x00" for u in units):
            return f"UTF-{width * 8}-BE", "no byte-order mark, but each character's byte follows zero bytes"
        if all(u[1:] == zeros and u[:1] != b"\x00" for u in units):
            return (
                f"UTF-{width * 8}-LE",
                "no byte-order mark, but each character's byte is followed by zero bytes",
            )
    return None


_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def _lines(handle: Iterable[bytes]) -> Iterator[bytes]:
    """The file's lines with their endings: `\n`, `\r\n`, or a lone `\r` (classic Mac files,
    which binary reading takes as one long line)."""
    for raw in handle:
        if b"\r" in raw.rstrip(b"\r\n"):
            yield from _LINE.findall(raw)
        else:
            yield raw


# --- JSON Lines and JSON --------------------------------------------------------------------------


def _jsonl_rows(name: str, path: Path) -> Iterator[tuple[Source, Row | DataError]]:
    with _open_text(name, path) as handle:
        for number, raw in enumerate(_lines(handle), start=1):
            where = Source(name, number)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield where, _not_utf8(where, raw, err)
                continue
            yield from _json_line(where, text.removeprefix(_BOM) if number == 1 else text, jsonl=True)


def _json_line(where: Source, text: str, *, jsonl: bool = False) -> Iterator[tuple[Source, Row | DataError]]:
    """The row on one JSON Lines line; nothing for a blank line. `jsonl`: the file is named `.jsonl`
    (a JSON array in it is named as such)."""
    if not text.strip():
        return
    if jsonl and where.line == 1 and text.lstrip().startswith("["):
        # One object per line is JSON Lines; a file that opens with `[` is a JSON array.
        yield (
            where,
            DataError.at(
                where,
                None,
                "this .jsonl file holds a JSON array, not one object per line: name it `.json` to read the array",
            ),
        )
        return
    try:
        value = _decode(text)
    except json.JSONDecodeError as err:
        yield where, DataError.at(where, None, f"invalid JSON at column {err.colno}: {err.msg}")
        return
    except _JsonLimit as err:
        yield where, DataError.at(where, None, str(err))
        return
    yield where, value if isinstance(value, dict) else _not_object(where, value)


class _JsonLimit(ValueError):
    """JSON that parses but that rlhf refuses: a key twice in one object, nesting too deep, an
    integer of too many digits."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook`: an object, refusing a key given twice (JSON keeps the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JsonLimit(f"field `{key}` appears twice in one object; give each field once")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _decode(text: str, pos: int | None = None) -> Any:
    """`text` decoded (from `pos` with `raw_decode`, returning (value, end)), with duplicate keys,
    too deep nesting and too long integers as `_JsonLimit`; broken JSON as `json.JSONDecodeError`."""
    try:
        if pos is None:
            return _DECODER.decode(text)
        return _DECODER.raw_decode(text, pos)
    except RecursionError:
        raise _JsonLimit("JSON nested too deeply to read (thousands of levels)") from None
    except (json.JSONDecodeError, _JsonLimit):  # both are ValueErrors: passed on as they are
        raise
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise _JsonLimit(f"a value JSON cannot hold as a number: {_first_line(err)}") from None


def _json_rows(name: str, path: Path) -> Iterator[tuple[Source, Row | DataError]]:
    with _open_text(name, path) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        line_start = data.rfind(b"\n", 0, err.start) + 1
        raise _not_utf8(Source(name, line), data[line_start : err.end], err, offset=line_start) from None
    start = _skip_space(text, 0)
    if start < len(text) and text[start] == "[":
        yield from _json_array_rows(name, text, start)
    else:
        # A .json file holding one object, or JSON Lines under the wrong suffix (any line endings).
        for number, text_line in enumerate(_TEXT_LINE_END.split(text), start=1):
            yield from _json_line(Source(name, number), text_line)


class _LineCounter:
    """Line number of increasing offsets in a text, counting each newline once."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _skip_space(text: str, pos: int) -> int:
    """The first position at or after `pos` that is not whitespace (len(text) when none is)."""
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _json_array_rows(name: str, text: str, start: int) -> Iterator[tuple[Source, Row | DataError]]:
    """Decode a JSON array one element at a time, so every row knows the line it starts on."""
    lines = _LineCounter(text)
    pos = _skip_space(text, start + 1)
    closed = pos < len(text) and text[pos] == "]"
    while not closed:
        where = Source(name, lines.at(pos))
        try:
            value, pos = _decode(text, pos)
        except json.JSONDecodeError as err:
            # The array is broken from here on: nothing after this point can be trusted.
            raise DataError(
                name, err.lineno, None, f"invalid JSON at column {err.colno}: {err.msg}"
            ) from None
        except _JsonLimit as err:  # where the element ends is unknown: the rest cannot be read either
            raise DataError(name, where.line, None, str(err)) from None
        yield where, value if isinstance(value, dict) else _not_object(where, value)
        pos = _skip_space(text, pos)
        if pos >= len(text):
            raise DataError(name, lines.at(pos), None, "the JSON array is not closed (missing `]`)")
        closed = text[pos] == "]"
        if not closed:
            if text[pos] != ",":
                raise DataError(
                    name,
                    lines.at(pos),
                    None,
                    f"expected `,` or `]` after an array element, got {text[pos]!r}",
                )
            pos = _skip_space(text, pos + 1)
    end = _skip_space(text, pos + 1)
    if end < len(text):
        raise DataError(name, lines.at(end), None, "unexpected text after the closing `]` of the JSON array")


def _not_object(where: Source, value: Any) -> DataError:
    return DataError.at(where, None, f"expected a JSON object ({{...}}) per row, got {describe_value(value)}")


def _not_utf8(where: Source, raw: bytes, err: UnicodeDecodeError, offset: int = 0) -> DataError:
    column = err.start - offset + 1
    byte = raw[err.start - offset]
    return DataError.at(
        where, None, f"not UTF-8 text (byte 0x{byte:02x} at byte {column}); re-save the file as UTF-8"
    )


# --- CSV -----------------------------------------------------------------------------------------


def _csv_rows(name: str, path: Path) -> Iterator[tuple[Source, Row | DataError]]:
    # The csv module refuses cells over 128 KiB by default; long completions are normal data.
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_CELL_LIMIT))
    bad_lines: dict[int, DataError] = {}
    with _open_text(name, path) as handle:
        reader = csv.reader(_decoded_lines(name, _lines(handle), bad_lines))
        try:
            header = next(reader, None)
        except csv.Error as err:
            raise DataError(name, 1, None, f"CSV error in the header: {err}") from None
        if header is None:
            return
        if 1 in bad_lines:
            raise bad_lines[1]
        columns = _csv_header(name, header)
        end = reader.line_num
        while True:
            start = end + 1
            try:
                cells = next(reader, None)
            except csv.Error as err:
                raise DataError(name, reader.line_num, None, f"CSV error: {err}") from None
            if cells is None:
                return
            end = reader.line_num
            where = Source(name, start)
            bad = [bad_lines.pop(n) for n in range(start, end + 1) if n in bad_lines]
            if bad:
                yield where, bad[0]
            elif not cells:
                continue  # a blank line
            elif len(cells) != len(columns):
                yield (
                    where,
                    DataError.at(
                        where,
                        None,
                        f"CSV row has {len(cells)} cells but the header has {len(columns)} columns "
                        "(a cell with a comma, quote or newline must be quoted)",
                    ),
                )
            else:
                yield where, {column: _csv_cell(cell) for column, cell in zip(columns, cells)}


def _decoded_lines(name: str, handle: Iterable[bytes], bad_lines: dict[int, DataError]) -> Iterator[str]:
    """Lines as text; a line that is not UTF-8 is noted in `bad_lines` and passed on with
    replacement characters, so the CSV parser keeps its place and only that row is lost."""
    for number, raw in enumerate(handle, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad_lines[number] = _not_utf8(Source(name, number), raw, err)
            text = raw.decode("utf-8", errors="replace")
        yield text.removeprefix(_BOM) if number == 1 else text


def _csv_header(name: str, header: list[str]) -> list[str]:
    columns = [cell.strip() for cell in header]
    for index, column in enumerate(columns, start=1):
        if not column:
            raise DataError(name, 1, None, f"CSV header has an empty column name (column {index})")
        if columns.index(column) != index - 1:
            raise DataError(name, 1, None, f"CSV header names column `{column}` twice")
    return columns


def _csv_cell(text: str) -> Any:
    """A cell's value: JSON lists and objects (messages, completions, ranks) are parsed; anything
    else, numbers included, stays text (number fields accept numeric text)."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return text  # e.g. a completion that merely starts with "["
        if isinstance(value, list | dict):
            return value
    return text


# --- parquet, datasets, hub -------------------------------------------------------------------


def _parquet_rows(name: str, path: Path) -> Iterator[tuple[Source, Row | DataError]]:
    import pyarrow
    import pyarrow.parquet

    try:
        parquet = pyarrow.parquet.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as err:
        raise DataError(name, None, None, f"not a readable parquet file: {_first_line(err)}") from None
    index = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            index += 1
            yield Source(name, index), row


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
        raise DataError(name, None, None, f"cannot load the saved dataset: {_first_line(err)}") from None
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


_FILE_READERS = {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows, "parquet": _parquet_rows}
