"""The pipeline's stages in order: what each reads, what its settings are (its fingerprint), what it
must leave behind, and how it runs.

A stage is finished when its outputs are there and readable (the files themselves are checked,
not only the folder) and the fingerprint it recorded (its resolved config plus the fingerprints
of the stages it read from) is the one it would have now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.config.core import to_dict
from rlhf.eval.tax import TAX_FILE
from rlhf.pipeline import feedback as fb
from rlhf.pipeline import runners as run
from rlhf.pipeline.config import METHODS
from rlhf.pipeline.layout import Paths, json_ready, jsonl_ready, model_ready
from rlhf.pipeline.wiring import (
    dpo_config,
    eval_stage_config,
    generate_config,
    ppo_config,
    rejection_sampling_config,
    reward_config,
    rrhf_config,
    sft_config,
)


def _reward_settings(p: Paths) -> Any:
    settings = to_dict(reward_config(p))
    return settings if p.cfg.reward_ensemble == 1 else {"reward": settings, "ensemble": p.cfg.reward_ensemble}


def _reward_outputs(p: Paths) -> list[str | None]:
    from rlhf.pipeline.ensemble import ensemble_dirs

    members = ensemble_dirs(p.stage("reward"), p.cfg.reward_ensemble)
    return [model_ready(p.stage("reward") / "model"), json_ready(p.run / "reward_eval" / "eval.json"),
            *(model_ready(m) for m in members)]  # fmt: skip


def _feedback_settings(p: Paths) -> dict[str, Any]:
    return {"feedback": to_dict(p.cfg.feedback), "earlier_feedback": p.cfg.earlier_feedback}


@dataclass(frozen=True)
class PipelineStage:
    """One stage of the pipeline (the training stages' own runs are `rlhf.training.stage.Stage`)."""

    name: str
    reads: tuple[str, ...]
    """Stages whose outputs this one reads (their fingerprints are part of its own)."""
    config: Callable[[Paths], Any] | None
    """Its settings (a config, or a dict of them), whose fingerprint decides whether it runs again."""
    outputs: Callable[[Paths], list[str | None]]
    """For each output it must leave: None when it is there and readable, else what is missing."""
    run: Callable[[Paths], dict[str, Any]]
    """Runs it; returns what it did (its summary)."""


def _feedback_outputs(p: Paths) -> list[str | None]:
    d = p.stage("feedback")
    return [jsonl_ready(d / fb.TRAIN_FILE), json_ready(d / fb.STATS_FILE)]


STAGE_LIST = (
    PipelineStage(
        "sft", (), sft_config, lambda p: [model_ready(p.stage("sft") / "model")], run.run_sft_stage
    ),
    PipelineStage(
        "generate", ("sft",), generate_config, lambda p: [jsonl_ready(p.candidates)], run.run_generate_stage
    ),
    PipelineStage("feedback", ("generate",), _feedback_settings, _feedback_outputs, run.run_feedback_stage),
    PipelineStage(
        "reward",
        ("sft", "feedback"),
        _reward_settings,
        _reward_outputs,
        run.run_reward_stage,
    ),
    PipelineStage(
        "ppo",
        ("sft", "reward"),
        ppo_config,
        lambda p: [model_ready(Path(p.policy("ppo"))), json_ready(p.stage("ppo") / "summary.json")],
        run.run_ppo_stage,
    ),
    PipelineStage(
        "dpo",
        ("sft", "feedback"),
        dpo_config,
        lambda p: [model_ready(Path(p.policy("dpo"))), json_ready(p.stage("dpo") / "summary.json")],
        run.run_dpo_stage,
    ),
    PipelineStage(
        "rrhf",
        ("sft", "generate", "reward"),
        rrhf_config,
        lambda p: [model_ready(Path(p.policy("rrhf"))), json_ready(p.stage("rrhf") / "summary.json")],
        run.run_rrhf_stage,
    ),
    PipelineStage(
        "best_of_n",
        ("sft", "reward"),
        lambda p: p.cfg.best_of_n,
        lambda p: [json_ready(p.stage("best_of_n") / "summary.json")],
        run.run_best_of_n_stage,
    ),
    PipelineStage(
        "rejection_sampling",
        ("sft", "reward"),
        rejection_sampling_config,
        lambda p: [
            model_ready(Path(p.policy("rejection_sampling"))),
            json_ready(p.stage("rejection_sampling") / "summary.json"),
        ],
        run.run_rejection_sampling_stage,
    ),
    PipelineStage(
        "eval",
        ("sft", "reward", *METHODS),
        eval_stage_config,
        lambda p: (
            [json_ready(p.stage("eval") / "eval.json"), json_ready(p.stage("eval") / "comparison.json")]
            + [json_ready(p.stage("eval") / m / "eval.json") for m in p.cfg.methods[1:]]
            + ([json_ready(p.stage("eval") / TAX_FILE)] if p.cfg.tax.wanted else [])
        ),
        run.run_eval_stage,
    ),
    PipelineStage(
        "report",
        ("sft", "feedback", "reward", *METHODS, "eval"),
        None,
        lambda p: [None if (p.run / "report.html").is_file() else str(p.run / "report.html")],
        run.run_report_stage,
    ),
)
STAGE_BY_NAME = {s.name: s for s in STAGE_LIST}


def config_dict(stage: PipelineStage, p: Paths) -> Any:
    if stage.config is None:
        return None
    cfg = stage.config(p)
    return to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
