"""`data.fields`: a file's own fields mapped onto a format's, so a schema no format knows needs a
few lines of YAML rather than a conversion script.

Each entry names a format field and where its value is in the row:

    data:
      fields:
        prompt: info.post                       # a nested field
        chosen: summaries[choice].text          # a list position held by another field
        rejected: summaries[1-choice].text      # ... or the other one of two
        completion: "response_{better_id}"      # a field whose name another field completes

A path is dotted names; a name may hold `{field}` or `{1-field}` (the value of another top-level
field, or one minus it); each name may be followed by `[n]`, `[field]` or `[1-field]` list
positions. The row the format reads holds the mapped fields, and the file's other fields as they
were (kept with each record as metadata).
"""

from __future__ import annotations

import re
from typing import Any

from rlhf.data.errors import DataError, describe_value
from rlhf.data.records import Source

_PART = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]+\])*)$")
_INDEX = re.compile(r"\[([^\[\]]+)\]")
_TEMPLATE = re.compile(r"\{([^{}]+)\}")


def map_fields(row: dict[str, Any], fields: dict[str, str], source: Source) -> dict[str, Any]:
    """`row` with each format field of `fields` set from its path; the row's fields that no path
    starts from are kept as they are."""
    used: set[str] = set()
    mapped = {name: resolve(row, path, source, name, used) for name, path in fields.items()}
    kept = {key: value for key, value in row.items() if key not in used and key not in mapped}
    return {**kept, **mapped}


def resolve(row: dict[str, Any], path: str, source: Source, target: str, used: set[str]) -> Any:
    """The value at `path` in `row` (see the module docstring); a DataError naming the path when
    it leads nowhere. Adds the top-level fields it read (the path's first, and those naming
    positions) to `used`."""
    value: Any = row
    for depth, part in enumerate(path.split(".")):
        found = _PART.match(part)
        if found is None:
            raise _fail(source, target, path, f"`{part}` is not a name with optional [positions]")
        name = _TEMPLATE.sub(
            lambda m: str(_int_of(row, m.group(1), source, target, path, used)), found.group(1)
        )
        if not isinstance(value, dict) or name not in value:
            raise _fail(source, target, path, f"no field `{name}` (got {describe_value(value)})")
        if depth == 0:
            used.add(name)
        value = value[name]
        for index_text in _INDEX.findall(found.group(2)):
            index = _int_of(row, index_text, source, target, path, used)
            if not isinstance(value, list) or not -len(value) <= index < len(value):
                raise _fail(source, target, path, f"no position {index} in {describe_value(value)}")
            value = value[index]
    return value


def _int_of(row: dict[str, Any], text: str, source: Source, target: str, path: str, used: set[str]) -> int:
    """`n`, the integer in top-level field `text`, or 1 minus it (`1-field`)."""
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    flip = text.startswith("1-")
    name = text[2:].strip() if flip else text
    used.add(name)
    value = row.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise _fail(
            source, target, path, f"field `{name}` should hold a whole number, got {describe_value(value)}"
        )
    return 1 - int(value) if flip else int(value)


def _fail(source: Source, target: str, path: str, message: str) -> DataError:
    return DataError.at(source, target, f"`data.fields` maps it from `{path}`: {message}")
