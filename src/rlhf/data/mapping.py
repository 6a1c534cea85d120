"""`data.fields`: a file's own fields mapped onto a format's, so a schema no format knows needs a
few lines of YAML rather than a conversion script.

Each entry names a format field and where its value is in the row:

    data:
      fields:
        prompt: info.post                       # a nested field
        chosen: summaries[choice].text          # a list position held by another field
        rejected: summaries[1-choice].text      # ... or the other one of two
        completion: "response_{better_id}"      # a field whose name another field completes
        chosen: "human_ref_{labels:B,A}"        # ... or the name another field's value picks
        completions: answers[*].answer          # a field of every item of a list, as a list

A path is dotted names; a name may hold `{field}` or `{1-field}` (the value of another top-level
field, or one minus it), or `{field:x,y,...}` (the alternative that field's value picks, from
0); each name may be followed by `[n]`, `[field]` or `[1-field]` list positions, or `[*]` (the
rest of the path from every item of the list). The row the format reads holds the mapped fields, and the file's other fields as they
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
    steps: list[str | int | None] = []  # a field name, a list position, or None for every item
    for depth, part in enumerate(path.split(".")):
        found = _PART.match(part)
        if found is None:
            raise _fail(source, target, path, f"`{part}` is not a name with optional [positions]")
        name = _TEMPLATE.sub(lambda m: _filled(row, m.group(1), source, target, path, used), found.group(1))
        if depth == 0:
            used.add(name)
        steps.append(name)
        for index_text in _INDEX.findall(found.group(2)):
            every = index_text.strip() == "*"
            steps.append(None if every else _int_of(row, index_text, source, target, path, used))
    return _walk(row, steps, source, target, path)


def _walk(value: Any, steps: list[str | int | None], source: Source, target: str, path: str) -> Any:
    """Follow `steps` from `value`; at `[*]`, the rest of the way from each item, as a list."""
    for at, step in enumerate(steps):
        if step is None:
            if not isinstance(value, list):
                raise _fail(source, target, path, f"`[*]` needs a list, got {describe_value(value)}")
            return [_walk(item, steps[at + 1 :], source, target, path) for item in value]
        if isinstance(step, str):
            if not isinstance(value, dict) or step not in value:
                raise _fail(source, target, path, f"no field `{step}` (got {describe_value(value)})")
        elif not isinstance(value, list) or not -len(value) <= step < len(value):
            raise _fail(source, target, path, f"no position {step} in {describe_value(value)}")
        value = value[step]
    return value


def _filled(row: dict[str, Any], text: str, source: Source, target: str, path: str, used: set[str]) -> str:
    """What `{text}` in a name stands for: the number in a field (`{field}`, `{1-field}`), or the
    alternative it picks (`{labels:B,A}`: B when `labels` is 0, A when it is 1)."""
    field, _, alternatives = text.partition(":")
    index = _int_of(row, field, source, target, path, used)
    if not alternatives:
        return str(index)
    options = [option.strip() for option in alternatives.split(",")]
    if not 0 <= index < len(options):
        raise _fail(
            source, target, path, f"field `{field.strip()}` is {index}, which picks none of {options}"
        )
    return options[index]


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
