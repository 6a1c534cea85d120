"""What the pipeline checks before anything trains, and which stages an outside input replaces."""

from __future__ import annotations

from rlhf.config.core import ConfigError
from rlhf.config.parts import DataConfig
from rlhf.pipeline.config import PipelineConfig


def replaced_by_input(name: str, cfg: PipelineConfig) -> str | None:
    """The outside input standing in for stage `name`, if the config gives one."""
    if name == "sft" and cfg.sft_model:
        return f"sft_model: {cfg.sft_model}"
    if name in ("generate", "feedback", "reward") and cfg.reward_model:
        return f"reward_model: {cfg.reward_model}"
    if name == "generate" and cfg.feedback.source == "file":
        return f"feedback.path: {cfg.feedback.path}"
    return None


def check_data(cfg: PipelineConfig) -> None:
    """Stage data every run needs, checked before anything trains (one-line errors)."""
    needs = [
        ("sft", cfg.sft.data, "sft.data.path", "the demonstrations", not cfg.sft_model),
        (
            "generate",
            cfg.generate.data,
            "generate.data.path",
            "the prompts to draw candidates for",
            not cfg.reward_model and cfg.feedback.source == "simulate",
        ),
        ("ppo", cfg.ppo.data, "ppo.data.path", "the PPO prompts", "ppo" in cfg.methods),
        (
            "dpo",
            cfg.dpo.data,
            "dpo.data.path",
            "preference pairs (the feedback stage is replaced)",
            "dpo" in cfg.methods and bool(replaced_by_input("feedback", cfg)),
        ),
        (
            "rrhf",
            cfg.rrhf.data,
            "rrhf.data.path",
            "responses or prompts (the generate stage is replaced)",
            "rrhf" in cfg.methods and bool(replaced_by_input("generate", cfg)),
        ),
        (
            "rejection_sampling",
            cfg.rejection_sampling.data if cfg.rejection_sampling.data.path else cfg.ppo.data,
            "rejection_sampling.data.path (or ppo.data.path)",
            "prompts",
            "rejection_sampling" in cfg.methods,
        ),
        ("eval", cfg.eval.data, "eval.data.path", "the held-out prompts", True),
    ]
    if (
        cfg.feedback.source == "simulate"
        and not cfg.gold
        and "feedback" in cfg.stages
        and not cfg.reward_model
    ):
        raise ConfigError(
            "`feedback.source: simulate` needs `gold: module:function` to judge by; "
            "or use `feedback.source: file` with people's preferences (e.g. `rlhf label export`)"
        )
    for name, data, key, what, needed in needs:
        if needed and name in cfg.stages and isinstance(data, DataConfig) and not data.path:
            raise ConfigError(f"`{key}` is not set: the {name} stage needs {what}")
