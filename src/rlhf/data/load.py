"""Load a data source into normalized records, following `DataConfig`.

    data = load_records(cfg.data, expect="reward")   # comparisons, rankings, ratings or labels
    print(data.report.summary())

The format is detected from the first row (or taken from `data.format`); a stage's `expect` is
checked right then, before the rest is read, so a wrong file fails in milliseconds. With
`on_error: raise` the first bad row stops the load; with `skip` bad rows are collected in the
report (count and lines) and the load goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rlhf.config.parts import DataConfig
from rlhf.data.errors import DataError, LoadReport, looks_like_judgment
from rlhf.data.fields import NormalizeContext, RowView
from rlhf.data.formats import FormatSpec, resolve_format
from rlhf.data.judgments import RATING_SCALE_MISSING
from rlhf.data.mapping import map_fields
from rlhf.data.readers import iter_rows
from rlhf.data.records import KINDS, Demonstration, PromptOnly, Record
from rlhf.data.text import broken_field

R = TypeVar("R")

KIND_FAMILIES: dict[str, tuple[str, ...]] = {
    "sft": ("demonstration",),
    "reward": ("comparison", "ranking", "rating", "label"),
    "preference": ("comparison", "ranking"),
    "score": ("demonstration", "comparison", "ranking", "candidates", "rating", "label"),
    "prompt": KINDS,
    **{kind: (kind,) for kind in KINDS if kind != "prompt"},
}
"""Values of `expect`: a stage family, or one record kind. `prompt` accepts every kind (any
record has a prompt; see `load_prompts`)."""


@dataclass
class LoadedData:
    """The records of one data source and how the load went."""

    records: list[Record]
    """Normalized records in source order (a message tree gives several, in depth-first order)."""
    format: str
    """The format id the rows were read as."""
    kind: str
    """The kind of every record: demonstration, comparison, ranking, candidates, rating, label,
    correction, feedback or prompt."""
    report: LoadReport
    """Rows read, records kept, rows skipped (with lines) and items left out."""
    rating_scale: tuple[float, float] | None = None
    """The scale ratings were read on (`data.rating_scale`, or a published dataset's own); None
    for other kinds."""

    def demonstrations(self) -> list[Demonstration]:
        """The records of a load that expected `sft` (or `demonstration`), typed as such."""
        return [_expect(r, Demonstration) for r in self.records]


def _expect(record: Record, kind: type[R]) -> R:
    if not isinstance(record, kind):  # loads accept one kind per `expect`; a mix is a bug, not bad data
        raise TypeError(f"{record.source}: a {record.kind} record where a {kind.__name__} was expected")
    return record


def load_records(cfg: DataConfig | str | Path, *, expect: str | None = None) -> LoadedData:
    """Every record of `cfg.path`; `expect` (see `KIND_FAMILIES`) rejects data of another kind."""
    cfg = as_data_config(cfg)
    if not cfg.path:
        raise DataError(None, None, None, "no data given: set `data.path`")
    accepted = _accepted_kinds(expect)
    report = LoadReport(path=cfg.path)
    scale = (cfg.rating_scale[0], cfg.rating_scale[1]) if cfg.rating_scale is not None else None
    ctx = NormalizeContext(
        rating_scale=scale, allow_ties=cfg.allow_ties, report=report, attribute=cfg.attribute
    )
    spec: FormatSpec | None = None
    records: list[Record] = []
    first_unread: dict[str, int | None] = {}  # field -> the line of the first row that has it
    _check_fields(cfg)
    for source, row in iter_rows(cfg.path, cfg.split, cfg.subset):
        report.rows_read += 1
        if not isinstance(row, DataError) and (broken := broken_field(row)):
            row = DataError.at(source, *broken)  # read or not, no field may hold unstorable text
        if not isinstance(row, DataError) and cfg.fields:
            try:
                row = map_fields(row, cfg.fields, source)
            except DataError as err:
                row = err
        if not isinstance(row, DataError):
            if spec is None:
                # Format problems concern the whole source: they stop the load even under `skip`.
                # Mapped fields decide the format alone (the file's others may be another schema's).
                shown = {key: row[key] for key in cfg.fields} if cfg.fields else row
                spec = resolve_format(cfg.format, shown, source)
                _check_spec(spec, cfg, accepted, expect, row)
                report.format = spec.name
            left_out_before = dict(report.left_out)
            view = RowView(row, source)
            try:
                records.extend(spec.normalize(view, ctx))
                for key in row.keys() - view.used:
                    report.unread[key] = report.unread.get(key, 0) + 1
                    first_unread.setdefault(key, source.line)
            except DataError as err:
                # A skipped row is reported as skipped, not also as items left out of it.
                report.left_out = left_out_before
                row = err
        if isinstance(row, DataError):
            if cfg.on_error == "raise":
                raise row
            report.skipped.append(row)
        if cfg.limit is not None and len(records) >= cfg.limit:
            del records[cfg.limit :]
            break
    if not records or spec is None:
        raise DataError(cfg.path, None, None, f"no records to use ({report.summary(with_path=False)})")
    report.records_kept = len(records)
    if not spec.published:  # a published schema knows its own extra fields
        ignored = {*(cfg.ignore_fields or ()), *spec.understood}
        report.unread_judgments = sorted(
            name for name in report.unread if looks_like_judgment(name) and name not in ignored
        )
        if expect is not None and report.unread_judgments:
            raise _unread_judgments_error(cfg, spec, report, first_unread[report.unread_judgments[0]])
    rating = (scale or _own_scale(spec, cfg)) if spec.kind == "rating" else None
    return LoadedData(records=records, format=spec.name, kind=spec.kind, report=report, rating_scale=rating)


def as_data_config(cfg: DataConfig | str | Path) -> DataConfig:
    """A `DataConfig`; a bare path gets the defaults."""
    return cfg if isinstance(cfg, DataConfig) else DataConfig(path=str(cfg))


def _accepted_kinds(expect: str | None) -> tuple[str, ...]:
    if expect is None:
        return KINDS
    if expect not in KIND_FAMILIES:
        raise ValueError(f"unknown `expect` {expect!r}; use one of {', '.join(KIND_FAMILIES)}")
    return KIND_FAMILIES[expect]


def _check_fields(cfg: DataConfig) -> None:
    """`data.fields` maps onto fields some format reads."""
    from rlhf.data.formats import KNOWN_FIELDS

    for name in cfg.fields or {}:
        if name not in KNOWN_FIELDS:
            raise DataError(
                cfg.path, None, "data.fields",
                f"`{name}` is not a field any format reads; map onto: {', '.join(KNOWN_FIELDS)}",
            )  # fmt: skip


def _check_spec(
    spec: FormatSpec, cfg: DataConfig, accepted: tuple[str, ...], expect: str | None, first_row: dict
) -> None:
    """The detected (or named) format fits the stage; else one line, with the first row's fields
    that look misspelled (`completon` read as bare prompts)."""
    from rlhf.data.formats import FORMATS, misspelled_fields

    if spec.kind not in accepted:
        example = next(f for f in FORMATS.values() if f.kind in accepted)
        raise DataError(
            cfg.path, None, None,
            f"found {spec.kind} data (format `{spec.name}`), but this stage expects {expect} data"
            + (f" ({' or '.join(accepted)})" if accepted != (expect,) else "")
            + f"; the first row has fields: {', '.join(map(str, first_row)) or 'none'}; for example "
            f"format `{example.name}` is {example.fields} (`rlhf data formats` lists them all)"
            + misspelled_fields(first_row),
        )  # fmt: skip
    if spec.kind == "rating" and cfg.rating_scale is None:
        if spec.scale is None:
            raise DataError(cfg.path, None, None, RATING_SCALE_MISSING)
        _own_scale(spec, cfg)


def _own_scale(spec: FormatSpec, cfg: DataConfig) -> tuple[float, float] | None:
    """A published rating format's scale for `data.attribute`; a bad attribute is one line."""
    try:
        return spec.scale(cfg.attribute) if spec.scale else None
    except ValueError as err:
        raise DataError(cfg.path, None, None, f"`data.attribute` {err}") from None


def _unread_judgments_error(
    cfg: DataConfig, spec: FormatSpec, report: LoadReport, line: int | None
) -> DataError:
    """A stage would train without fields that look like judgments: name them and the ways on."""
    names = report.unread_judgments
    shown = ", ".join(f"`{name}` ({report.unread[name]} rows)" for name in names[:6])
    more = f" and {len(names) - 6} more" if len(names) > 6 else ""
    return DataError(
        cfg.path, line, None,
        f"format `{spec.name}` ({spec.kind}) does not read {shown}{more}, which look like judgments; "
        f"map them onto a format's fields with `data.fields` (e.g. `data.fields: {{rating: {names[0]}}}`), "
        f"name the format that reads them in `data.format` (`rlhf data formats`), or train without "
        f"them: `data.ignore_fields: [{', '.join(names)}]`",
    )  # fmt: skip


def prompts_of(data: LoadedData) -> list[PromptOnly]:
    """The prompt of every record, one per record, in order, not deduplicated (a prompt shared by
    several comparisons appears once per comparison). Plain text has no prompt: an error."""
    if data.format == "text":
        raise DataError(data.report.path, None, None, "format `text` has no prompts (plain text only)")
    return [
        record
        if isinstance(record, PromptOnly)
        else PromptOnly(record.prompt, record.source, meta=record.meta)
        for record in data.records
    ]


def load_prompts(cfg: DataConfig | str | Path) -> list[PromptOnly]:
    """Prompts for RL from data of any format (see `prompts_of`); use `load_records` + `prompts_of`
    to keep the load report."""
    return prompts_of(load_records(cfg, expect="prompt"))
