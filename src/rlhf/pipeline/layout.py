"""Where a pipeline run keeps each stage's outputs, and whether they are there and readable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rlhf.pipeline import feedback as fb
from rlhf.pipeline.config import PipelineConfig

WEIGHT_FILES = (
    "model.safetensors",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
)


def model_ready(directory: Path) -> str | None:
    """None when `directory` holds a loadable saved model (config and weights), else what is missing."""
    if not (directory / "config.json").is_file() and not (directory / "adapter_config.json").is_file():
        return f"{directory}/config.json"
    if not any(
        (directory / name).is_file() and (directory / name).stat().st_size > 0 for name in WEIGHT_FILES
    ):
        return f"{directory}/model.safetensors"
    return None


def json_ready(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return str(path)
    return None


def jsonl_ready(path: Path) -> str | None:
    """None when the JSONL file exists, is not empty and every line parses."""
    try:
        fb.read_jsonl(path)[0]
    except (OSError, ValueError, IndexError):
        return str(path)
    return None


@dataclass
class Paths:
    """Where every stage's outputs live, and the models the later stages read."""

    run: Path
    cfg: PipelineConfig

    def stage(self, name: str) -> Path:
        return self.run / name

    @property
    def sft_model(self) -> str:
        return self.cfg.sft_model or str(self.run / "sft" / "model")

    @property
    def start_policy(self) -> str:
        """The policy that samples candidates and that PPO starts from (an earlier round's, or SFT)."""
        return self.cfg.start_policy or self.sft_model

    @property
    def candidates(self) -> Path:
        return self.run / "generate" / "candidates.jsonl"

    @property
    def reward_model(self) -> str:
        return self.cfg.reward_model or str(self.run / "reward" / "model")

    def policy(self, method: str | None = None) -> str:
        """The policy a method trained (default: the first of `methods`); best-of-N's is the SFT model."""
        method = method or self.cfg.methods[0]
        if method == "best_of_n":
            return self.sft_model
        if method == "rejection_sampling":
            return str(self.run / "rejection_sampling" / "sft" / "model")
        return str(self.run / method / "policy")

    @property
    def best_of_n_file(self) -> Path:
        return self.run / "rejection_sampling" / "best_of_n.jsonl"
