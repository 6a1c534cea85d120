"""`rlhf pipeline`: run the stages in order in one run directory, skipping the finished ones.

`<output_dir>/pipeline_state.json` records, per stage, the fingerprint of what it ran with (its
resolved config, the size and time of the files its `path` fields name, and the outputs of the
stages it read) and when it finished. A stage runs again
when its outputs are missing or unreadable, when its fingerprint changed, or when `rerun` names it;
a stage that runs again gives its readers a new fingerprint, so they follow.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rlhf.config.core import ConfigError, to_dict
from rlhf.pipeline.config import METHODS, PipelineConfig
from rlhf.pipeline.stages import STAGE_LIST, Paths, check_data, config_dict, replaced_by_input
from rlhf.pipeline.summary import headline

STATE_FILE = "pipeline_state.json"
SUMMARY_FILE = "summary.json"


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_files(value: Any) -> list[Any]:
    """Identity (size, modification time) of the files a stage config reads through its `path` fields,
    so that changed data or a rebuilt model makes the stage run again. Directories count by the files
    directly in them (a model directory's weights and config)."""
    found: list[Any] = []
    if isinstance(value, dict):
        for key, item in sorted(value.items()):
            if key == "path" and isinstance(item, str) and item:
                found.append(_identity(Path(item)))
            else:
                found.extend(input_files(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(input_files(item))
    return found


def _identity(path: Path) -> Any:
    if path.is_file():
        stat = path.stat()
        return [str(path), stat.st_size, stat.st_mtime_ns]
    if path.is_dir():
        stats = [(f.name, f.stat()) for f in sorted(path.iterdir()) if f.is_file()]
        return [str(path), [[name, st.st_size, st.st_mtime_ns] for name, st in stats]]
    return [str(path), None]


def read_state(run: Path) -> dict[str, Any]:
    try:
        state = json.loads((run / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_pipeline(cfg: PipelineConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the configured stages; returns (and writes to `summary.json`) what each did and the headline."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "`rlhf pipeline` runs in one process; for several GPUs or machines, launch the training "
            "stages one by one (`torchrun ... -m rlhf.cli.main sft|reward|ppo`) with the same configs"
        )
    check_data(cfg)
    run = Path(cfg.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    paths = Paths(run, cfg)
    state = read_state(run)
    outputs: dict[str, str | None] = {}  # stage -> id of the outputs its readers saw (None: not there)
    stages: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for stage in STAGE_LIST:
        if stage.name in METHODS and stage.name not in cfg.methods:
            outputs[stage.name] = "-"  # not part of this run: its readers neither need nor follow it
            continue
        outside = replaced_by_input(stage.name, cfg)
        if outside:
            outputs[stage.name] = _hash(outside)
            stages[stage.name] = {"status": "input", "input": outside}
            log(f"[pipeline] {stage.name}: using {outside}")
            continue
        settings = config_dict(stage, paths)
        fingerprint = _hash([settings, input_files(settings), [outputs.get(r) for r in stage.reads]])
        missing = [m for m in stage.outputs(paths) if m]
        recorded = state.get(stage.name, {})
        finished = not missing and recorded.get("fingerprint") == fingerprint and stage.name not in cfg.rerun
        if stage.name not in cfg.stages:
            # Not asked for: its outputs (if any) are used as they are.
            outputs[stage.name] = None if missing else recorded.get("output_id", fingerprint)
            stages[stage.name] = {"status": "not run" if missing else "kept"}
            continue
        if finished:
            outputs[stage.name] = recorded.get("output_id", fingerprint)
            stages[stage.name] = {"status": "skipped (finished)", "seconds": recorded.get("seconds")}
            log(f"[pipeline] {stage.name}: finished earlier, outputs checked; skipped")
            continue
        for upstream in stage.reads:
            if outputs.get(upstream) is None:
                raise ConfigError(
                    f"stage `{stage.name}` needs the outputs of stage `{upstream}` in {run}/{upstream}, "
                    f"which are not there: add `{upstream}` to `stages` (or give an outside input)"
                )
        if stage.name == "report":
            _write_json(run / SUMMARY_FILE, _summary(run, stages, started))
        log(
            f"[pipeline] {stage.name}: running" + (f" (missing {missing[0]})" if missing and recorded else "")
        )
        t0 = time.perf_counter()
        stage.run(paths)
        seconds = round(time.perf_counter() - t0, 1)
        output_id = _hash([fingerprint, time.time()])
        state[stage.name] = {
            "fingerprint": fingerprint,
            "output_id": output_id,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seconds": seconds,
        }
        _write_json(run / STATE_FILE, state)
        outputs[stage.name] = output_id
        stages[stage.name] = {"status": "ran", "seconds": seconds}
        log(f"[pipeline] {stage.name}: done in {seconds:.1f} s")
    summary = _summary(run, stages, started)
    _write_json(run / SUMMARY_FILE, summary)
    return summary


def _summary(run: Path, stages: dict[str, Any], started: float) -> dict[str, Any]:
    return {
        "run_dir": str(run),
        "stages": stages,
        "seconds": round(time.perf_counter() - started, 1),
        "headline": headline(run),
        "report": str(run / "report.html") if (run / "report.html").is_file() else None,
    }
