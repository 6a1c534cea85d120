"""Metrics as JSONL (one object per logged step) plus TensorBoard event files.

JSONL is the record of truth: easy to read back for plots and reports, and to diff between runs.
TensorBoard is for watching a run live. Only the main process writes (`enabled=False` elsewhere).
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from rlhf.files import writing


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars become Python numbers; NaN and inf become strings JSON can hold."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Append metrics to `<run_dir>/metrics.jsonl` and, optionally, TensorBoard events. A full disk
    is a `DiskFullError` naming the file; TensorBoard's writer thread says nothing of its own."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._start = time.time()
        self._file: TextIO | None = None
        self._writer: Any = None
        self._hook: Any = None
        self.path = self.run_dir / "metrics.jsonl"
        self.events = self.run_dir / "tensorboard"
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with writing(self.path):
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._hook = _quiet_writer_threads()
            with writing(self.events):
                self._writer = SummaryWriter(log_dir=str(self.events))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record `metrics` (names like `train/loss`) at optimizer step `step`."""
        if self._file is None:  # not enabled (not the main process)
            return
        row = {"step": step, "elapsed_s": round(time.time() - self._start, 3)}
        row.update({k: _plain(v) for k, v in metrics.items()})
        with writing(self.path):
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        if self._writer is not None:
            with writing(self.events):
                for key, value in row.items():
                    if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                        self._writer.add_scalar(key, value, global_step=step)

    def log_text(self, step: int, tag: str, text: str) -> None:
        """Free text (e.g. sampled generations) to TensorBoard and to the JSONL under `tag`."""
        if self._file is None:
            return
        with writing(self.path):
            self._file.write(json.dumps({"step": step, tag: text}) + "\n")
            self._file.flush()
        if self._writer is not None:
            with writing(self.events):
                self._writer.add_text(tag, text, global_step=step)

    def close(self, *, quietly: bool = False) -> None:
        """Close both writers. `quietly`: the run is already failing, so a writer that cannot
        finish (the disk that stopped the run is still full) says nothing more; otherwise its
        error is raised once both are closed."""
        failed: BaseException | None = None
        for name in ("_file", "_writer"):
            writer, where = getattr(self, name), self.path if name == "_file" else self.events
            setattr(self, name, None)
            if writer is None:
                continue
            try:
                with writing(where):
                    writer.close()
            except Exception as err:
                failed = failed or err
        if self._hook is not None:
            threading.excepthook, self._hook = self._hook, None
        if failed is not None and not quietly:
            raise failed

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(quietly=kind is not None)


def _quiet_writer_threads() -> Any:
    """Keep TensorBoard's writer thread from printing its own traceback when a write fails (the
    same error reaches the run's next log call, which says it in one line). Returns the hook it
    replaced, for `close` to put back."""
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError):
            return
        previous(args)

    threading.excepthook = hook
    return previous


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl file (the file itself or the run directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Drop rows logged after `step` (by a run that was interrupted and is now resumed from `step`)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):  # a line cut short by the kill
            continue
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
