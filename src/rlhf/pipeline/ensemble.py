"""A small ensemble of reward models for the `disagreement` rule (`reward_ensemble: K`).

Beside the pipeline's reward model, the reward stage trains K - 1 more, each with its own seed on
a bootstrap resample of the training pairs (as many pairs, drawn with replacement), into
`reward/ensemble_<k>/model`. Where they agree, the feedback already settles the question; where
their predicted preferences spread, more labels would: the next round's `feedback.select:
disagreement` reads all K.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

from rlhf.files import write_jsonl_atomic


def ensemble_dirs(reward_stage: Path, size: int) -> list[Path]:
    """The extra members' model directories (the pipeline's own reward model is not among them)."""
    return [reward_stage / f"ensemble_{k}" / "model" for k in range(1, size)]


def train_ensemble(
    reward_cfg: Any, train_pairs: Path, reward_stage: Path, size: int, seed: int
) -> list[dict]:
    """Train members 1 .. size-1 like `reward_cfg`, each on its own bootstrap resample and seed;
    returns their training summaries."""
    from rlhf.pipeline.feedback import read_jsonl
    from rlhf.reward.train import run_reward

    rows = read_jsonl(train_pairs)
    summaries = []
    for k in range(1, size):
        out = reward_stage / f"ensemble_{k}"
        rng = random.Random(seed * 1000 + k)
        sample = write_jsonl_atomic(out / "pairs.jsonl", [rows[rng.randrange(len(rows))] for _ in rows])
        cfg = dataclasses.replace(
            reward_cfg,
            seed=reward_cfg.seed + k,
            data=dataclasses.replace(reward_cfg.data, path=str(sample)),
            eval=dataclasses.replace(reward_cfg.eval, path=None, fraction=0.0),
            output_dir=str(out),
        )
        summaries.append(
            {"member": k, "train_loss": run_reward(cfg, overwrite=True).summary.get("train_loss", [None])[-1]}
        )
    return summaries
