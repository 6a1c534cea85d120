"""Read what a pipeline run left in its directory, stage by stage, tolerating missing parts.

Every part of a run directory is optional: a stage that never ran has no files, and one that was
stopped early may have metrics but no evaluation. `load_run` reads whatever is there into a
`RunData`; absent files become None. A file that is there but malformed is an error that names
the file and line (`DataError`), never a silent gap in the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from rlhf.data.errors import DataError
from rlhf.data.jsonl import read_jsonl, read_text

# Where each stage writes, relative to the run directory (the layout `rlhf pipeline` uses).
STAGE_DIRS = {
    "sft": "sft",
    "feedback": "feedback",
    "reward": "reward",
    "reward_eval": "reward_eval",
    "ppo": "ppo",
    "eval": "eval",
    "dpo": "dpo",
    "rrhf": "rrhf",
}


@dataclass
class RunData:
    """Everything the report shows, read from one run directory; None where a file is missing."""

    run_dir: Path
    config_text: str | None = None
    """`config.yaml` verbatim."""
    summary: dict[str, Any] | None = None
    """`summary.json`: the pipeline's own summary (its `headline` holds the key numbers)."""
    sft: list[dict[str, Any]] | None = None
    """`sft/metrics.jsonl`, one dict per logged line."""
    feedback: dict[str, Any] | None = None
    """`feedback/feedback.json`: labelers, judgments, agreement."""
    reward: list[dict[str, Any]] | None = None
    """`reward/metrics.jsonl`."""
    reward_eval: dict[str, Any] | None = None
    """`reward_eval/eval.json`, what `rlhf eval reward` wrote."""
    ppo: list[dict[str, Any]] | None = None
    """`ppo/metrics.jsonl`."""
    ppo_summary: dict[str, Any] | None = None
    """`ppo/summary.json`: what the PPO run measured (e.g. the steps the KL guard flagged)."""
    ppo_samples: list[dict[str, Any]] | None = None
    """`ppo/samples.jsonl`: completions logged during training."""
    eval: dict[str, Any] | None = None
    """`eval/eval.json`, what `rlhf eval policy` wrote."""
    eval_samples: list[dict[str, Any]] | None = None
    """`eval/samples.jsonl`: policy and baseline answers side by side."""
    comparison: dict[str, Any] | None = None
    """`eval/comparison.json`: every method of the run side by side (when it compared several)."""
    tax: dict[str, Any] | None = None
    """`eval/tax.json`: the alignment tax (held-out losses and task scores against SFT), when measured."""
    dpo: list[dict[str, Any]] | None = None
    """`dpo/metrics.jsonl`."""
    rrhf: list[dict[str, Any]] | None = None
    """`rrhf/metrics.jsonl`."""
    stage_configs: dict[str, str] = field(default_factory=dict)
    """Each stage's own `config.yaml` verbatim, by stage name, where it wrote one."""
    data_reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each stage's training-data load report (its summary.json's `data_report`), by stage name."""
    appended_runs: dict[str, int] = field(default_factory=dict)
    """Files (relative paths) that held several runs appended one after another, and how many;
    only the last run of each is kept above."""

    def has_stage_dir(self, stage: str) -> bool:
        """Whether the stage's directory exists (it may still lack the file the report wants)."""
        return (self.run_dir / STAGE_DIRS[stage]).is_dir()


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory. Raises FileNotFoundError when it does not exist, DataError on bad JSON."""
    root = Path(run_dir)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such run directory")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory (expected a run directory)")
    run = RunData(
        run_dir=root,
        config_text=read_text(root / "config.yaml"),
        summary=read_json(root / "summary.json"),
        feedback=read_json(root / "feedback" / "feedback.json"),
        reward_eval=read_json(root / "reward_eval" / "eval.json"),
        ppo_summary=read_json(root / "ppo" / "summary.json"),
        eval=read_json(root / "eval" / "eval.json"),
        eval_samples=read_jsonl(root / "eval" / "samples.jsonl"),
        comparison=read_json(root / "eval" / "comparison.json"),
        tax=read_json(root / "eval" / "tax.json"),
    )
    # Logs are appended to, so running a stage again into the same directory leaves both runs in
    # one file; the step count restarting marks where the last one begins.
    for name, path in (("sft", "sft/metrics.jsonl"), ("reward", "reward/metrics.jsonl"),
                       ("ppo", "ppo/metrics.jsonl"), ("ppo_samples", "ppo/samples.jsonl"),
                       ("dpo", "dpo/metrics.jsonl"), ("rrhf", "rrhf/metrics.jsonl")):  # fmt: skip
        rows = read_jsonl(root / path)
        if rows is not None:
            rows, runs = last_run(rows)
            if runs > 1:
                run.appended_runs[path] = runs
        setattr(run, name, rows)
    for stage in ("sft", "reward", "ppo", "dpo", "rrhf"):
        text = read_text(root / stage / "config.yaml")
        if text is not None:
            run.stage_configs[stage] = text
        report = (read_json(root / stage / "summary.json") or {}).get("data_report")
        if isinstance(report, dict):
            run.data_reports[stage] = report
    return run


def read_json(path: Path) -> dict[str, Any] | None:
    """One JSON object from a file, or None when the file does not exist."""
    text = read_text(path)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            str(path), err.lineno, None, f"not valid JSON: {err.msg} (column {err.colno})"
        ) from None
    if not isinstance(value, dict):
        raise DataError(str(path), None, None, f"expected a JSON object, got {type(value).__name__}")
    return value


def last_run(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The rows of the last run in an appended log, and how many runs it holds. A new run starts
    where `step` goes down (a resumed run truncates its log first, so its steps never do)."""
    starts, previous = [0], None
    for index, row in enumerate(rows):
        step = row.get("step")
        if not is_number(step):
            continue
        if previous is not None and step < previous:
            starts.append(index)
        previous = step
    return rows[starts[-1] :], len(starts)


def is_number(value: Any) -> TypeGuard[float]:
    """A finite int or float (not a bool, not text such as logged samples)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def numeric_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Keys that hold a number on at least one row, in first-seen order (without `step`)."""
    keys: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and is_number(value):
                keys.setdefault(key)
    return list(keys)


def series(rows: list[dict[str, Any]], *keys: str) -> tuple[list[float], ...]:
    """(steps, values of keys[0], values of keys[1], ...) over the rows where every key is a number.

    The step is the row's `step` when it has one, else its position among the rows.
    """
    columns: tuple[list[float], ...] = tuple([] for _ in range(len(keys) + 1))
    for index, row in enumerate(rows):
        values = [v for v in (row.get(key) for key in keys) if is_number(v)]
        if len(values) < len(keys):
            continue
        step = row.get("step")
        columns[0].append(step if is_number(step) else index)
        for column, value in zip(columns[1:], values):
            column.append(float(value))
    return columns


def running_mean(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last `window` values (fewer at the start), same length as `values`."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def smoothing_window(n: int) -> int:
    """The running-mean window for a curve of n points: about a tenth of it, at least 1."""
    return max(1, n // 10)
