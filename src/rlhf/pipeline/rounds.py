"""`rlhf pipeline` with `rounds: N`: the loop run round after round, as InstructGPT and Anthropic's
HH work ran it, because a reward model trained only on the SFT model's samples is blind to what
the optimized policy writes.

Round r lives in `<output_dir>/round_<r>/`, a whole pipeline run directory of its own:

    generate   candidates from the round's policy (round 0: the SFT model) on prompts no earlier
               round used (`generate.data`'s prompts split into N parts, in file order)
    feedback   judged (simulated labelers, or people); the pairs chosen by `feedback.select`,
               reading the previous round's reward model; earlier rounds' pairs are added
    reward     retrained on all feedback so far, warm-started from the previous round's; it and
               the previous one are scored on this round's new held-out pairs
    ppo        from the round's policy, leashed to the SFT model (`ppo.reference`)
    eval       the round's policy against the SFT model

SFT runs once, in round 0. A round's stages are skipped on a rerun when finished, as in one
pipeline run; a round that ran anything makes every later round run again in full.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf.data.errors import DataError
from rlhf.files import read_json_dict
from rlhf.pipeline.config import STAGES, PipelineConfig
from rlhf.pipeline.ensemble import ensemble_dirs

ROUNDS_FILE = "rounds.json"
"""`<output_dir>/rounds.json`: each round's numbers (what the report's rounds section shows)."""


def round_dir(run: Path, r: int) -> Path:
    return run / f"round_{r}"


def run_rounds(
    cfg: PipelineConfig, run_pipeline: Callable[..., dict[str, Any]], *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run every round in order, each a whole `run_pipeline`; returns (and writes to
    `summary.json`) the rounds' numbers."""
    from rlhf.pipeline.state import SUMMARY_FILE, write_json

    run = Path(cfg.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    chunks = split_prompts(cfg, run)
    summaries, forced = [], False
    for r, chunk in enumerate(chunks):
        log(f"[rounds] round {r} of {len(chunks)} ({round_dir(run, r)})")
        round_cfg = round_config(cfg, run, r, chunk, rerun_all=forced)
        summary = run_pipeline(round_cfg, log=log)
        summaries.append(summary)
        if "waiting" in summary:  # people have not judged this round's pairs yet: stop here
            summary["waiting"] = f"round {r}: {summary['waiting']}"
            break
        produced = {"sft", "generate", "feedback", "reward", "ppo"}
        forced = forced or any(summary["stages"].get(s, {}).get("status") == "ran" for s in produced)
    rows = [round_row(run, r, summary) for r, summary in enumerate(summaries) if "waiting" not in summary]
    write_json(run / ROUNDS_FILE, {"rounds": rows})
    from rlhf.report.rounds import write_rounds_report

    report = write_rounds_report(run, rows)
    summary = {
        "run_dir": str(run),
        "rounds": rows,
        "headline": summaries[-1]["headline"],
        "rounds_summaries": summaries,
        "report": str(report),
        "seconds": round(sum(s.get("seconds", 0.0) for s in summaries), 1),
    }
    if "waiting" in summaries[-1]:
        summary["waiting"] = summaries[-1]["waiting"]
    write_json(run / SUMMARY_FILE, summary)
    return summary


def split_prompts(cfg: PipelineConfig, run: Path) -> list[Path]:
    """`generate.data`'s prompts in `rounds` parts (file order, the first parts one longer when
    they do not divide), each written to `round_<r>/prompts.jsonl` (only when it changed, so a
    rerun's fingerprints hold)."""
    from rlhf.data.jsonl import prompt_to_json
    from rlhf.data.load import load_records, prompts_of

    prompts = prompts_of(load_records(cfg.generate.data, expect="prompt"))
    if len(prompts) < 2 * cfg.rounds:
        raise DataError(
            cfg.generate.data.path, None, None,
            f"{len(prompts)} prompts for {cfg.rounds} rounds; each round needs 2 or more prompts of its own "
            "(a held-out one among them)",
        )  # fmt: skip
    size, extra = divmod(len(prompts), cfg.rounds)
    paths, at = [], 0
    for r in range(cfg.rounds):
        part = prompts[at : at + size + (1 if r < extra else 0)]
        at += len(part)
        text = "".join(
            json.dumps({**p.meta, "prompt": prompt_to_json(p.prompt)}, ensure_ascii=False) + "\n"
            for p in part
        )
        path = round_dir(run, r) / "prompts.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def round_config(cfg: PipelineConfig, run: Path, r: int, prompts: Path, *, rerun_all: bool) -> PipelineConfig:
    """Round r's own pipeline config: its directory and prompts, the previous round's policy,
    reward model and feedback, and the selection's reward models."""
    feedback = cfg.feedback
    models = list(feedback.select_with)
    changes: dict[str, Any] = {"output_dir": str(round_dir(run, r)), "rounds": 1}
    if r > 0:
        previous = round_dir(run, r - 1)
        members = [previous / "reward" / "model", *ensemble_dirs(previous / "reward", cfg.reward_ensemble)]
        models[:0] = [str(m) for m in members]
        changes.update(
            sft_model=cfg.sft_model or str(round_dir(run, 0) / "sft" / "model"),
            start_policy=str(previous / "ppo" / "policy"),
            reward_base=str(previous / "reward" / "model"),
            earlier_feedback=str(previous / "feedback"),
            stages=[s for s in cfg.stages if s != "sft"],
        )
    select = feedback.select if len(models) >= feedback.models_needed() else "random"
    database = feedback.database.replace("{round}", str(r)) if feedback.database else None
    changes["feedback"] = dataclasses.replace(
        feedback, select=select, select_with=models, seed=feedback.seed + r, database=database
    )
    changes["generate"] = dataclasses.replace(
        cfg.generate, data=dataclasses.replace(cfg.generate.data, path=str(prompts), limit=None)
    )
    if rerun_all:
        changes["rerun"] = [s for s in STAGES if s != "sft"]
    return dataclasses.replace(cfg, **changes)


def round_row(run: Path, r: int, summary: dict[str, Any]) -> dict[str, Any]:
    """One round's numbers: labels, agreement, the reward models on the new samples, gold, KL."""
    base = round_dir(run, r)
    fb = read_json_dict(base / "feedback" / "feedback.json")
    new = read_json_dict(base / "reward_eval" / "new_samples.json")
    head = summary.get("headline") or {}
    return {
        "round": r,
        "labels": fb.get("judgments"),
        "train_pairs": fb.get("train_rows"),
        "train_pairs_all": fb.get("pairs_rows_all", fb.get("train_rows")),
        "selection": (fb.get("selection") or {}).get("rule"),
        "agreement": fb.get("raw_agreement"),
        "rm_accuracy_new_before": (new.get("before") or {}).get("accuracy"),
        "rm_accuracy_new_after": (new.get("after") or {}).get("accuracy"),
        "rm_accuracy_heldout": head.get("reward_model_accuracy"),
        "gold_sft": head.get("gold_sft"),
        "gold_policy": head.get("gold_policy"),
        "win_rate_gold": head.get("win_rate_gold"),
        "kl": head.get("kl"),
        "kl_stderr": head.get("kl_stderr"),
    }
