"""Configuration of `rlhf reward`: the shared parts plus the reward losses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config.core import ConfigError
from rlhf.config.parts import (
    DataConfig,
    EpochRunControl,
    LoggingConfig,
    ModelConfig,
    OptimizerConfig,
    PeftConfig,
    PromptConfig,
)


@dataclass
class RewardEvalConfig:
    path: str | None = None
    """Held-out feedback (same kind as `data`, read like it); overrides `fraction`."""
    fraction: float = 0.0
    """Without `path`: this share of the training records (chosen with `seed`) is held out instead."""
    every: int = 0
    """Evaluate every N optimizer steps (0: only at the start and the end). Needs `path` or `fraction`."""
    batch_size: int = 8
    """Groups per evaluation (and final scoring) forward pass on each process."""
    bins: int = 10
    """Bins of the calibration table (reward gap -> how often the model is right)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"`eval.fraction` must be in [0, 1), got {self.fraction}")
        if self.every < 0 or self.batch_size < 1 or self.bins < 1:
            raise ConfigError("`eval.every` must be >= 0, `eval.batch_size` and `eval.bins` >= 1")

    @property
    def enabled(self) -> bool:
        return bool(self.path) or self.fraction > 0


@dataclass
class RewardConfig(EpochRunControl):
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to start from (usually the SFT model, a hub id, or `builtin:tiny`); it gets a
    scalar head (a one-label sequence classifier)."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """Full fine-tuning (`none`), LoRA or QLoRA (the head trains in full); prompt tuning is not supported."""
    data: DataConfig = field(default_factory=DataConfig)
    """Human feedback: comparisons, rankings (e.g. OpenAssistant trees), ratings or labels."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """How prompts are laid out; use the same settings as the policy the reward will score."""
    eval: RewardEvalConfig = field(default_factory=RewardEvalConfig)
    """Held-out evaluation: pairwise accuracy, margin, calibration, reward statistics."""
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-5, warmup_ratio=0.03))
    """AdamW, learning-rate schedule, gradient clipping and accumulation."""
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(output_dir="runs/reward"))
    """Run directory, metric frequency, TensorBoard, progress bar."""
    batch_size: int = 8
    """Groups (prompts with their completions) per micro-batch on each process; all completions of
    a micro-batch go through the model in one forward pass."""
    loss: Literal["auto", "pairwise", "plackett_luce", "regression", "rating_pairs", "label"] = "auto"
    """`auto`: comparisons and rankings -> pairwise (Bradley-Terry over all K(K-1)/2 pairs of a
    ranking, each prompt weighing 1, as InstructGPT), ratings -> regression, labels -> label (BCE).
    `plackett_luce`: listwise over rankings. `rating_pairs`: pairs from the ratings of each prompt."""
    ties: Literal["skip", "half"] = "skip"
    """Completions ranked or rated equal: leave the pair out, or pull their rewards together."""
    margin: bool = True
    """Use the data's margins: a comparison's `margin`, or (rating_pairs) the rating difference."""
    centering: float = 0.0
    """Coefficient of an auxiliary mean(r^2) loss that keeps rewards near zero (0: off)."""
    positive_labels: list[str] | None = None
    """Label data: labels meaning good (case-insensitive). Default: good, okay, safe, true, yes,
    chosen, 1, positive, acceptable. Set together with `negative_labels`."""
    negative_labels: list[str] | None = None
    """Label data: labels meaning bad. Default: bad, harmful, unsafe, false, no, rejected, 0,
    negative, unacceptable."""
    packing: bool = True
    """Lay the completions of a micro-batch end to end in rows of up to `data.max_length` tokens
    (position ids restart at each completion) instead of one padded row each: no compute spent on
    padding. Before training, one micro-batch is scored both ways; if the model lets packed
    completions see each other (its attention ignores position restarts) the run says so and pads."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be at least 1, got {self.batch_size}")
        if self.centering < 0:
            raise ConfigError(f"`centering` must be >= 0, got {self.centering}")
        if self.peft.method == "prompt_tuning":
            raise ConfigError(
                "`peft.method: prompt_tuning` is not supported for reward models; use lora or qlora"
            )
        if (self.positive_labels is None) != (self.negative_labels is None):
            raise ConfigError("set both `positive_labels` and `negative_labels`, or neither (defaults)")


@dataclass
class ScoreConfig:
    """`rlhf score`: rewards for the completions of a file, written as JSONL."""

    model: str = ""
    """Reward model directory (from `rlhf reward`, or any one-label sequence classifier)."""
    data: DataConfig = field(default_factory=DataConfig)
    """What to score: prompt/completion rows, comparisons, rankings, candidates (from `rlhf
    generate`), ratings or labels. The judgments in the file are kept in the output, not used."""
    output: str = "scores.jsonl"
    """JSONL written here: each input row with its reward(s) added."""
    batch_size: int = 16
    """Completions per forward pass (sorted by length, so a batch pads only to its own longest)."""
    normalize: bool = False
    """Write (r - mean) / std with the statistics saved with the model instead of raw rewards."""
    device: str | None = None
    """`cpu`, `cuda`, `cuda:1`, ...; default: the GPU when there is one."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype: `auto` is bf16 on a GPU that supports it, else float32."""
    max_length: int | None = None
    """Token limit per prompt + completion; default: the one the model was trained with."""
    progress: bool = True
    """Show a progress bar (on stderr)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be at least 1, got {self.batch_size}")


@dataclass
class EvalRewardConfig:
    """`rlhf eval reward`: held-out metrics of a reward model on human feedback."""

    model: str = ""
    """Reward model directory."""
    data: DataConfig = field(default_factory=DataConfig)
    """Held-out feedback: comparisons, rankings, ratings (give `data.rating_scale`) or labels."""
    output: str | None = None
    """Also write every metric (calibration table, reward histogram) to this JSON file."""
    ties: Literal["skip", "half"] = "skip"
    """Ranking/rating ties: left out of the pairs (`skip`) or kept as tie pairs in the loss (`half`)."""
    bins: int = 10
    """Bins of the calibration table and the reward histogram."""
    batch_size: int = 16
    """Completions per forward pass."""
    device: str | None = None
    """`cpu`, `cuda`, ...; default: the GPU when there is one."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype: `auto` is bf16 on a GPU that supports it, else float32."""
    max_length: int | None = None
    """Token limit per prompt + completion; default: the one the model was trained with."""
    progress: bool = True
    """Show a progress bar (on stderr)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.bins < 1:
            raise ConfigError("`batch_size` and `bins` must be at least 1")
