"""`rlhf pipeline`: run the stages in order in one run directory, skipping the finished ones.

`<output_dir>/pipeline_state.json` records, per stage, the fingerprint of what it ran with (its
resolved config, the size and time of the files its `path` fields name, and the outputs of the
stages it read) and when it finished. A stage runs again
when its outputs are missing or unreadable, when its fingerprint changed, or when `rerun` names it;
a stage that runs again gives its readers a new fingerprint, so they follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rlhf.config.core import ConfigError, to_dict
from rlhf.pipeline.checks import check_data, replaced_by_input
from rlhf.pipeline.config import METHODS, PipelineConfig
from rlhf.pipeline.layout import Paths
from rlhf.pipeline.people import WaitingForPeople
from rlhf.pipeline.rounds import run_rounds
from rlhf.pipeline.stages import STAGE_LIST, config_dict
from rlhf.pipeline.state import STATE_FILE, SUMMARY_FILE, fingerprint_of, input_files, read_state, write_json
from rlhf.report.headline import headline


def run_pipeline(cfg: PipelineConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the configured stages (with `rounds`, round after round: `rlhf.pipeline.rounds`);
    returns (and writes to `summary.json`) what each did and the headline."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "`rlhf pipeline` runs in one process; for several GPUs or machines, launch the training "
            "stages one by one (`torchrun ... -m rlhf.cli.main sft|reward|ppo`) with the same configs"
        )
    check_data(cfg)
    if cfg.rounds > 1:
        return run_rounds(cfg, run_pipeline, log=log)
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
            outputs[stage.name] = fingerprint_of(outside)
            stages[stage.name] = {"status": "input", "input": outside}
            log(f"[pipeline] {stage.name}: using {outside}")
            continue
        settings = config_dict(stage, paths)
        fingerprint = fingerprint_of([settings, input_files(settings), [outputs.get(r) for r in stage.reads]])
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
            write_json(run / SUMMARY_FILE, _summary(run, stages, started))
        log(
            f"[pipeline] {stage.name}: running" + (f" (missing {missing[0]})" if missing and recorded else "")
        )
        t0 = time.perf_counter()
        try:
            stage.run(paths)
        except WaitingForPeople as waiting:  # not finished: a rerun runs it again
            return _waiting(run, stage.name, waiting, stages, started, log)
        seconds = round(time.perf_counter() - t0, 1)
        output_id = fingerprint_of([fingerprint, time.time()])
        state[stage.name] = {
            "fingerprint": fingerprint,
            "output_id": output_id,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seconds": seconds,
        }
        write_json(run / STATE_FILE, state)
        outputs[stage.name] = output_id
        stages[stage.name] = {"status": "ran", "seconds": seconds}
        log(f"[pipeline] {stage.name}: done in {seconds:.1f} s")
    summary = _summary(run, stages, started)
    write_json(run / SUMMARY_FILE, summary)
    return summary


def _waiting(
    run: Path, stage: str, waiting: WaitingForPeople, stages: dict[str, Any], started: float, log
) -> dict[str, Any]:
    """The summary of a run stopped at `stage` to wait for people's judgments."""
    stages[stage] = {"status": "waiting", "message": str(waiting)}
    log(f"[pipeline] {stage}: {waiting}")
    summary = {**_summary(run, stages, started), "waiting": str(waiting)}
    write_json(run / SUMMARY_FILE, summary)
    return summary


def _summary(run: Path, stages: dict[str, Any], started: float) -> dict[str, Any]:
    return {
        "run_dir": str(run),
        "stages": stages,
        "seconds": round(time.perf_counter() - started, 1),
        "headline": headline(run),
        "report": str(run / "report.html") if (run / "report.html").is_file() else None,
    }
