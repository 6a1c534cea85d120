"""Configuration of `rlhf reward`: the shared parts plus the reward losses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rlhf.config.core import ConfigError
from rlhf.config.parts import (
    DataConfig,
    EpochRunControl,
    HeldOutConfig,
    LoggingConfig,
    ModelConfig,
    OptimizerConfig,
    PeftConfig,
    PromptConfig,
)
from rlhf.rewards.config import RewardSourcesConfig


@dataclass
class RewardEvalConfig(HeldOutConfig):
    """The held-out evaluation (`HeldOutConfig`): accuracy, margin and calibration."""

    bins: int = 10
    """Bins of the calibration table (reward gap -> how often the model is right)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bins < 1:
            raise ConfigError(f"`eval.bins` must be at least 1, got {self.bins}")


@dataclass
class RewardConfig(EpochRunControl):
    RENAMED: ClassVar[dict[str, str]] = {"loss": "loss_type"}

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
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Metric frequency, TensorBoard, progress bar."""
    output_dir: str = "runs/reward"
    """Run directory: the resolved config, metrics, checkpoints and the trained model go here. A run
    that does not resume refuses one that holds an earlier run's checkpoints (`--overwrite`)."""
    batch_size: int = 8
    """Groups (prompts with their completions) per micro-batch on each process; all completions of
    a micro-batch go through the model in one forward pass."""
    loss_type: Literal["auto", "pairwise", "plackett_luce", "regression", "rating_pairs", "label"] = "auto"
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

    RENAMED: ClassVar[dict[str, str]] = {
        "model": "reward.model",
        "batch_size": "reward.batch_size",
        "device": "reward.device",
        "dtype": "reward.dtype",
    }

    reward: RewardSourcesConfig = field(default_factory=RewardSourcesConfig)
    """What scores: a reward model (`reward.model`: from `rlhf reward`, or any one-label sequence
    classifier), a Python function, an endpoint, or a weighted sum of them (their raw scores), with
    the batch size, device and dtype of reward models."""
    data: DataConfig = field(default_factory=DataConfig)
    """What to score: prompt/completion rows, comparisons, rankings, candidates (from `rlhf
    generate`), ratings or labels. The judgments in the file are kept in the output, not used."""
    output: str = "scores.jsonl"
    """JSONL written here: each input row with its reward(s) added."""
    normalize: bool = False
    """Write (r - mean) / std with the statistics saved with the reward model instead of raw rewards
    (`reward.model` alone)."""
    max_length: int | None = None
    """Token limit per prompt + completion of a reward model; default: the one it was trained with."""
    progress: bool = True
    """Show a progress bar (on stderr)."""


@dataclass
class EvalRewardConfig:
    """`rlhf eval reward`: held-out metrics of a reward model on human feedback."""

    RENAMED: ClassVar[dict[str, str]] = ScoreConfig.RENAMED

    reward: RewardSourcesConfig = field(default_factory=RewardSourcesConfig)
    """The reward model to evaluate (`reward.model`), with its batch size, device and dtype."""
    data: DataConfig = field(default_factory=DataConfig)
    """Held-out feedback: comparisons, rankings, ratings (give `data.rating_scale`) or labels."""
    output: str | None = None
    """Also write every metric (calibration table, reward histogram) to this JSON file."""
    ties: Literal["skip", "half"] = "skip"
    """Ranking/rating ties: left out of the pairs (`skip`) or kept as tie pairs in the loss (`half`)."""
    bins: int = 10
    """Bins of the calibration table and the reward histogram."""
    max_length: int | None = None
    """Token limit per prompt + completion; default: the one the model was trained with."""
    progress: bool = True
    """Show a progress bar (on stderr)."""

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ConfigError("`bins` must be at least 1")
