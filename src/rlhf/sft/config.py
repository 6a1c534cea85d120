"""Configuration of `rlhf sft`: the shared parts plus what supervised fine-tuning adds."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.core import ConfigError
from rlhf.config.parts import (
    DataConfig,
    EpochRunControl,
    FreezeConfig,
    HeldOutConfig,
    LoggingConfig,
    ModelConfig,
    OptimizerConfig,
    PeftConfig,
    PromptConfig,
)


@dataclass
class SftEvalConfig(HeldOutConfig):
    """The held-out evaluation (`HeldOutConfig`): loss and perplexity, plus a few greedy answers."""

    generations: int = 3
    """After each evaluation, answer this many held-out prompts (greedy) and log prompt, answer and
    reference as text (TensorBoard and metrics.jsonl): a look at what the loss means."""
    max_new_tokens: int = 64
    """Length limit of those answers."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.generations < 0 or self.max_new_tokens < 1:
            raise ConfigError("`eval.generations` must be >= 0 and `eval.max_new_tokens` >= 1")


@dataclass
class SftConfig(EpochRunControl):
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to fine-tune (hub id, directory, or `builtin:tiny`), and how to load it."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """Full fine-tuning (`none`), LoRA, QLoRA or prompt tuning."""
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    """Selective fine-tuning (with `peft.method none`): train only the last N layers or named modules."""
    data: DataConfig = field(default_factory=DataConfig)
    """Demonstrations: prompt/completion, chat, ShareGPT, Alpaca or plain text."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """How prompts are laid out (chat template, instruction template, few-shot). Sample the trained
    model (`rlhf generate`, PPO) with the same settings: the run's config.yaml records them."""
    eval: SftEvalConfig = field(default_factory=SftEvalConfig)
    """Held-out evaluation: loss, perplexity and sample answers at intervals."""
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=2e-5, warmup_ratio=0.03))
    """AdamW, learning-rate schedule, gradient clipping and accumulation."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Metric frequency, TensorBoard, progress bar."""
    output_dir: str = "runs/sft"
    """Run directory: the resolved config, metrics, checkpoints and the trained model go here. A run
    that does not resume refuses one that holds an earlier run's checkpoints (`--overwrite`)."""
    batch_size: int = 8
    """Rows per micro-batch on each process. One optimizer step sees batch_size x processes x
    gradient_accumulation_steps rows."""
    completion_only: bool = True
    """Loss only on completion tokens (the prompt is context, not a target). `false`: every token
    (refused for an encoder-decoder, whose encoder reads the prompt and whose decoder predicts the
    answer alone)."""
    packing: bool | None = None
    """Pack several short examples into each row of `data.max_length` tokens (fewer pad tokens,
    faster), with position ids restarting per example so no example attends to another. Default
    (null): on, except with prompt tuning (whose soft prompt is one per row). `false`: one example per row.
    An encoder-decoder's rows are never packed (one prompt per row for its encoder)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be at least 1, got {self.batch_size}")
        if self.packing and self.peft.method == "prompt_tuning":
            raise ConfigError(
                "`packing` cannot be used with prompt tuning: the soft prompt is prepended once per row, "
                "so packed examples after the first would not see it; set packing: false"
            )
        selective = self.freeze.train_last_layers is not None or self.freeze.train_modules
        if selective and self.peft.method != "none":
            raise ConfigError("`freeze` selects layers to train in full; it needs `peft.method: none`")

    @property
    def use_packing(self) -> bool:
        return self.packing if self.packing is not None else self.peft.method != "prompt_tuning"
