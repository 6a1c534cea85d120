"""Typed dataclass configs: YAML files plus `--set a.b=value` overrides, strict checking, field docs.

Every config is a tree of dataclasses. Each field carries its documentation as a string literal
written right under it (the attribute-docstring convention); `field_docs` reads those strings
from the source, so `--print-config` and the docs never drift from the code.

Errors are one line and name the dotted key: an unknown key gets a "did you mean" suggestion,
a wrong type says what was expected and what was given, a missing required field says so.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import functools
import inspect
import math
import re
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

import yaml

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the offending key."""


# ----------------------------------------------------------------------------- field docs


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass `cls` (and its dataclass bases) to the docstring under it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        klass_node = ast.parse(source).body[0]
        assert isinstance(klass_node, ast.ClassDef)
        body = klass_node.body  # the class body
        for node, nxt in zip(body, body[1:] + [None]):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            if (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


# ----------------------------------------------------------------------------- type checking


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        return (
            f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)}]"
        )
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{type(value).__name__} {shown}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type `tp`, converting where the conversion loses nothing."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            usual = vars(tp).get("USUAL_KEY")  # the key a bare value most likely meant
            hint = f" (for one value: `{key}.{usual}: {value}`)" if usual and isinstance(value, str) else ""
            raise ConfigError(
                f"`{key}` must be a mapping of {tp.__name__} fields, got {_describe(value)}{hint}"
            )
        return from_dict(tp, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"`{key}` must not be null; expected {type_name(tp)}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"`{key}` expects {type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) is type(choices[choices.index(value)]):
            return value
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"`{key}` must be one of {type_name(tp)}, got {value!r}{hint}")
    if origin in (list, tuple, dict):
        return _coerce_container(value, tp, origin, key)
    return _coerce_scalar(value, tp, key)


def _coerce_container(value: Any, tp: Any, origin: Any, key: str) -> Any:
    """`_coerce` for list[...], tuple[...] and dict[...] types: every item checked."""
    if origin is list or origin is tuple:
        if isinstance(value, str) and origin is list:
            value = [value]  # `--set peft.target_modules=q_proj` means a list of one
        if not isinstance(value, list | tuple):
            raise ConfigError(f"`{key}` expects a list ({type_name(tp)}), got {_describe(value)}")
        (item_tp, *rest) = typing.get_args(tp) or (Any,)
        if origin is tuple and rest and rest[0] is not Ellipsis:
            if len(value) != len(typing.get_args(tp)):
                raise ConfigError(f"`{key}` expects {len(typing.get_args(tp))} items, got {len(value)}")
            return tuple(
                _coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, typing.get_args(tp)))
            )
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"`{key}` expects a mapping, got {_describe(value)}")
        ktp, vtp = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, ktp, key): _coerce(v, vtp, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"config field `{key}` has an unsupported type {tp!r}")


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    """`_coerce` for Any, bool, int, float, str and Path."""
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"`{key}` expects true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"`{key}` expects an integer, got {_describe(value)}")
    if tp is float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = math.inf  # an int too large for a float stays infinite
            with contextlib.suppress(OverflowError):
                number = float(value)
        elif isinstance(value, str):  # YAML reads `1e-5` (no dot) as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(f"`{key}` expects a number, got {_describe(value)}")
        if not math.isfinite(number):
            raise ConfigError(f"`{key}` expects a finite number, got {_describe(value)}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"`{key}` expects a string, got {_describe(value)}")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(f"`{key}` expects a path, got {_describe(value)}")
    raise TypeError(f"config field `{key}` has an unsupported type {tp!r}")


# ----------------------------------------------------------------------------- building


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a nested dict, checking keys and types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    renamed = renamed_keys(cls)
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields and key in renamed:
            raise ConfigError(f"`{dotted}` was renamed `{renamed_path(prefix, renamed[key])}`")
        if key not in fields:
            names = list(fields)
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            where = f"`{prefix}`" if prefix else "the top level"
            hint = (
                f"; did you mean `{prefix + '.' if prefix else ''}{close[0]}`?"
                if close
                else f"; {where} accepts: {', '.join(names)}"
            )
            raise ConfigError(f"unknown key `{dotted}`{hint}")
        moved = vars(cls).get("VALUE_MOVED", {})
        if key in moved and isinstance(value, str):  # a field that now means something else
            doc = field_docs(cls).get(key, "").split(":")[0].split("(")[0].strip()
            raise ConfigError(
                f"`{dotted}: {value}` is now `{renamed_path(prefix, moved[key])}: {value}`; `{dotted}` is {doc[0].lower() + doc[1:]}"
            )
        default = _default_of(fields[key])
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            # A stage may give a part its own defaults (e.g. the demo's output_dir); keys set by the
            # user go on top of those, not on top of the part's generic defaults.
            value = merge(to_dict(default), value)
        kwargs[key] = _coerce(value, hints[key], dotted)
    for name, f in fields.items():
        if name in kwargs:
            continue
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            dotted = f"{prefix}.{name}" if prefix else name
            doc = field_docs(cls).get(name, "")
            raise ConfigError(
                f"missing required field `{dotted}`" + (f" ({doc.splitlines()[0]})" if doc else "")
            )
    try:
        return cls(**kwargs)
    except ConfigError as err:  # __post_init__ checks that span several fields
        # Say which part failed, unless the message already names its fields (`eval.fraction`);
        # a part's check that names its fields under the part's own name (`sampling.temperature`,
        # also a top-level part of `rlhf generate`) is given the full path (`rollout.sampling.`).
        message, tail = str(err), prefix.rsplit(".", 1)[-1]
        if prefix and f"`{prefix}." not in message and f"`{tail}." in message:
            message = message.replace(f"`{tail}.", f"`{prefix}.")
        named = not prefix or f"`{prefix}." in message
        raise ConfigError(message if named else f"{prefix}: {message}") from None


def renamed_keys(cls: type) -> dict[str, str]:
    """The keys of dataclass `cls` that were renamed: old key -> its new path, relative to `cls`
    (`../x`: the field `x` of the config holding it). From the `RENAMED` class attribute of `cls`
    and its bases; a renamed key is refused naming the new one."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        found.update(vars(klass).get("RENAMED", {}))
    return found


def renamed_path(prefix: str, new: str) -> str:
    """The full dotted key a renamed key's new path (relative to the config at `prefix`) names."""
    parts = prefix.split(".") if prefix else []
    while new.startswith("../"):
        parts, new = parts[:-1], new[3:]
    return ".".join([*parts, new])


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def to_dict(cfg: Any) -> Any:
    """Plain nested dict/list/scalars of a config tree (YAML- and JSON-safe)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def parse_overrides(overrides: list[str], replaced: list[str] | None = None) -> dict[str, Any]:
    """Turn `["a.b=1", "c=x"]` into `{"a": {"b": 1}, "c": "x"}`; values are read as YAML. A key
    given again takes the later value (shortcut flags and scripts add overrides after the user's);
    `replaced` collects a line for each key whose value that changed."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got `{item}`")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set has an empty key part in `{item}`")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set `{key}`: `{part}` was already given a value")
            node = child
        if replaced is not None and parts[-1] in node and node[parts[-1]] != value:
            replaced.append(
                f"`{key}` is given twice in --set ({node[parts[-1]]}, then {value}): using {value}"
            )
        node[parts[-1]] = value
    return tree


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key `{key}` is given twice in one mapping; give it once",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of `cls`, then the YAML file at `path`, then the `key=value` overrides. An error
    about a key the file set (and no override replaced) names the file and the key's line."""
    data = read_yaml(path) if path else {}
    replaced: list[str] = []
    extra = parse_overrides(overrides or [], replaced)
    for line in replaced:  # not silent: a repeated key is usually a typo, sometimes a script's override
        print(f"[config] warning: {line}", file=sys.stderr)
    try:
        return from_dict(cls, merge(data, extra))
    except ConfigError as err:
        where = _where_in_file(str(err), path, extra) if path else None
        if where is None:
            raise
        raise ConfigError(f"{where}: {err}") from None


_KEY_IN_MESSAGE = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*)`")
"""A dotted key in backticks, list positions included: `reward.sources[0].weight`."""


def _where_in_file(message: str, path: str | Path, overrides: dict[str, Any]) -> str | None:
    """`path:line` of the first key the message names in backticks, when the file sets it (or,
    for a key the file lacks, the deepest part of it the file sets) and no `--set` replaced it."""
    found = _KEY_IN_MESSAGE.search(message)
    if found is None:
        return None
    parts = re.findall(r"[A-Za-z_]\w*|\[\d+\]", found.group(1))  # names and [positions]
    node: Any = overrides
    for part in parts:  # given (or replaced) on the command line: not the file's doing
        if part.startswith("[") or not isinstance(node, dict) or part not in node:
            break
        node = node[part]
    else:
        return None
    lines = _key_lines(Path(path))
    for depth in range(len(parts), 0, -1):
        line = lines.get(".".join(parts[:depth]).replace(".[", "["))
        if line is not None:
            return f"{path}:{line}"
    return None


def _key_lines(path: Path) -> dict[str, int]:
    """The line (1-based) of every key of the YAML file, by dotted path (`optimizer.lr`)."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[f"{prefix}[{index}]"] = item.start_mark.line + 1
                walk(item, f"{prefix}[{index}]")
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[dotted] = key_node.start_mark.line + 1
            walk(value_node, dotted)

    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)  # noqa: S506
    if root is not None:
        walk(root, "")
    return lines


# ----------------------------------------------------------------------------- printing


def render_config(cfg: DataclassInstance, indent: int = 0) -> str:
    """YAML of the resolved config with each field's doc as a comment above it."""
    lines: list[str] = []
    pad = "  " * indent
    docs = field_docs(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        for doc_line in docs.get(f.name, "").splitlines():
            lines.append(f"{pad}# {doc_line}".rstrip())
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            lines.append(f"{pad}{f.name}:")
            lines.append(render_config(value, indent + 1))
        else:
            dumped = yaml.safe_dump(
                {f.name: to_dict(value)}, default_flow_style=True, width=10_000, sort_keys=False
            )
            dumped = dumped.strip()
            if dumped.startswith("{") and dumped.endswith("}"):
                dumped = dumped[1:-1]
            lines.append(f"{pad}{dumped}")
    return "\n".join(lines)


def undocumented_fields(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of fields in the config tree of `cls` that have no docstring (for tests)."""
    missing = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        if not docs.get(f.name):
            missing.append(dotted)
        if dataclasses.is_dataclass(hints[f.name]):
            missing += undocumented_fields(hints[f.name], prefix=dotted + ".")
    return missing
