"""`rlhf data inspect FILE` and `rlhf data formats`: what a data source holds, as readable text."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rlhf.config.parts import DataConfig
from rlhf.data.formats import FORMATS, format_table
from rlhf.data.load import load_records
from rlhf.data.records import Candidates, Ranking, Record

_MAX_ERRORS_SHOWN = 10
_MAX_TEXT_SHOWN = 400

__all__ = ["FORMATS", "format_table", "inspect_data", "record_to_dict"]


def inspect_data(source: str | Path | DataConfig, **overrides: Any) -> str:
    """A report on a data source: detected format and kind, counts, problems, one example.

    `overrides` are `DataConfig` fields (format, rating_scale, split, allow_ties, limit, ...).
    Unless `on_error` is given, bad rows are skipped and listed rather than stopping the
    inspection at the first one. Problems with the source as a whole raise `DataError`.
    """
    if isinstance(source, DataConfig):
        cfg = dataclasses.replace(source, **overrides)
    else:
        cfg = DataConfig(path=str(source), **{"on_error": "skip", **overrides})
    data = load_records(cfg)
    report = data.report
    spec = FORMATS[data.format]
    how = "given" if cfg.format != "auto" else "detected"
    lines = [
        f"source:   {cfg.path}" + (f" (split {cfg.split})" if cfg.split != "train" else ""),
        f"format:   {data.format} ({how}): {spec.description}",
        f"kind:     {data.kind}",
        f"rows:     {report.rows_read} read, {len(report.skipped)} skipped",
        f"records:  {len(data.records)}" + (f" (limit {cfg.limit})" if cfg.limit is not None else ""),
    ]
    rankings = [record for record in data.records if isinstance(record, Ranking)]
    if rankings:
        completions = sum(len(record.completions) for record in rankings)
        pairs = sum(len(record.pairs()) for record in rankings)
        lines.append(f"ranked:   {completions} completions, {pairs} ordered pairs")
    candidate_sets = [record for record in data.records if isinstance(record, Candidates)]
    if candidate_sets:
        counts = [len(record.completions) for record in candidate_sets]
        repeated = sum(len(record.completions) - len(set(record.completions)) for record in candidate_sets)
        per_prompt = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)} to {max(counts)}"
        lines.append(
            f"samples:  {sum(counts)} completions, {per_prompt} per prompt, "
            f"{repeated} repeating an earlier one of the same prompt"
        )
    for reason, count in sorted(report.left_out.items()):
        lines.append(f"left out: {count} {reason}")
    if report.unread:
        names = ", ".join(f"{name} ({count} rows)" for name, count in sorted(report.unread.items()))
        lines.append(f"not read: {names}; kept with each record as metadata, unused by training")
        if report.unread_judgments:
            lines.append(
                f"warning:  {', '.join(report.unread_judgments)} look like judgments that format `{data.format}` does not read: "
                "if they are, map them with `data.fields` or set `data.format` (`rlhf data formats`); "
                "training stages refuse the file until they are read or listed in `data.ignore_fields`"
            )
    if report.skipped:
        lines.append(f"skipped rows (lines {', '.join(map(str, report.skipped_lines[:_MAX_ERRORS_SHOWN]))}):")
        lines.extend(f"  {err}" for err in report.skipped[:_MAX_ERRORS_SHOWN])
        if len(report.skipped) > _MAX_ERRORS_SHOWN:
            lines.append(f"  ... {len(report.skipped) - _MAX_ERRORS_SHOWN} more")
    example = data.records[0]
    lines.append(f"example ({example.source}):")
    lines.append(json.dumps(_shorten(record_to_dict(example)), indent=2, ensure_ascii=False, default=str))
    return "\n".join(lines)


def record_to_dict(record: Record) -> dict[str, Any]:
    """A record as plain JSON-ready data: `kind` first, messages as {role, content}, source as `path:line`."""
    data = dataclasses.asdict(record)
    data["source"] = str(record.source)
    return {"kind": record.kind, **data}


def _shorten(value: Any) -> Any:
    """Long texts cut for display, saying how much was left out."""
    if isinstance(value, str) and len(value) > _MAX_TEXT_SHOWN:
        return f"{value[:_MAX_TEXT_SHOWN]}... [{len(value) - _MAX_TEXT_SHOWN} more characters]"
    if isinstance(value, dict):
        return {key: _shorten(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_shorten(item) for item in value]
    return value
