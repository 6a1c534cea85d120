"""Rows of one data file: JSON Lines, a JSON array (or one object), CSV, Parquet; compressed or not.

Every row is tagged with the file and line it came from. A file that is UTF-16 or UTF-32 text is
named as such (with or without a byte-order mark); lines may end in LF, CRLF or a lone CR. Problems
confined to one row (bad JSON on a line, a CSV row with the wrong number of cells, bytes that are not
UTF-8 on one line) are yielded in place of the row; problems that spoil the rest of the file are
raised. `rlhf.data.readers` picks the reader and reads directories and hub datasets.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
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

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_TEXT_LINE_END = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"
_PARQUET_BATCH_ROWS = 1024
_CSV_CELL_LIMIT = 2**31 - 1  # the largest value a C long takes on every platform


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
        raise DataError(name, None, None, f"cannot decompress{past}: {first_line(err)}") from None


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
        raise _JsonLimit(f"a value JSON cannot hold as a number: {first_line(err)}") from None


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
        raise DataError(name, None, None, f"not a readable parquet file: {first_line(err)}") from None
    index = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            index += 1
            yield Source(name, index), row


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


_FILE_READERS = {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows, "parquet": _parquet_rows}


def read_file(name: str, path: Path, reader: str) -> Iterator[tuple[Source, Row | DataError]]:
    """The rows of the file at `path` (shown as `name`) by `reader` (a value of `FILE_TYPES`)."""
    yield from _decompressed(name, _FILE_READERS[reader](name, path))
