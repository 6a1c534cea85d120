"""Configuration of `rlhf dpo`: the shared parts plus the DPO family's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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


@dataclass
class DpoConfig(EpochRunControl):
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy to start from: the SFT model (directory, hub id, or `builtin:tiny`)."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """Full fine-tuning (`none`), LoRA or QLoRA. With an adapter, the reference is the same weights
    with the adapter switched off (no second copy); prompt tuning is not supported."""
    reference: str | None = None
    """The frozen reference model (same tokenizer); default: `model.path`, the starting model.
    Must be left unset with LoRA/QLoRA, whose reference is the base under the adapter."""
    data: DataConfig = field(default_factory=DataConfig)
    """Preferences: comparisons (chosen/rejected) or rankings (every pair of a prompt's ranking,
    as in the reward stage; e.g. OpenAssistant trees or an `rlhf label export`)."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """How prompts are laid out: the settings the SFT model was trained with."""
    eval: HeldOutConfig = field(default_factory=HeldOutConfig)
    """Held-out preferences: loss and implicit-reward accuracy and margin."""
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=5e-7, warmup_ratio=0.1))
    """AdamW, learning-rate schedule, gradient clipping and accumulation."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Metric frequency, TensorBoard, progress bar."""
    output_dir: str = "runs/dpo"
    """Run directory: the resolved config, metrics, checkpoints and the trained model go here. A run
    that does not resume refuses one that holds an earlier run's checkpoints (`--overwrite`)."""
    loss_type: Literal["sigmoid", "conservative", "ipo"] = "sigmoid"
    """`sigmoid`: DPO, -log σ(β h) with h the chosen-minus-rejected log-ratio margin against the
    reference. `conservative`: DPO that takes each label to be wrong with probability
    `label_smoothing` (noisy labels). `ipo`: (h - 1/(2β))² on per-token mean log-probs."""
    beta: float = 0.1
    """β: the strength of the leash to the reference (higher stays closer). For IPO it sets the
    target margin 1/(2β)."""
    label_smoothing: float = 0.0
    """`conservative` only: the assumed label-noise rate ε in [0, 0.5)."""
    reference_logps: Literal["auto", "cache", "live"] = "auto"
    """`cache`: the reference's log-probs of every completion are computed once before training
    (the reference model is then freed, or never kept with full fine-tuning); `live`: the reference
    runs on every micro-batch. `auto`: cache when the run covers the training data at least once
    (then caching costs no more forward passes than live), else live."""
    ties: Literal["skip"] = "skip"
    """Completions ranked equal make no pair (a preference needs a winner)."""
    batch_size: int = 8
    """Groups (a prompt with its completions) per micro-batch on each process; every completion of
    a micro-batch goes through the model in one forward pass, chosen and rejected together."""
    packing: bool = True
    """Lay the completions of a micro-batch end to end in rows of up to `data.max_length` tokens
    (position ids restart per sequence) instead of one padded row each. Checked on the first
    micro-batch: if the model lets packed sequences see each other, the run says so and pads."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be at least 1, got {self.batch_size}")
        if self.beta <= 0:
            raise ConfigError(f"`beta` must be positive, got {self.beta}")
        if self.loss_type == "conservative":
            if not 0.0 < self.label_smoothing < 0.5:
                raise ConfigError(
                    f"`loss_type: conservative` needs 0 < label_smoothing < 0.5, got {self.label_smoothing}"
                )
        elif self.label_smoothing:
            raise ConfigError("`label_smoothing` is the noise rate of `loss_type: conservative`; set that")
        if self.peft.method == "prompt_tuning":
            raise ConfigError("`peft.method: prompt_tuning` is not supported by dpo; use lora or qlora")
        if self.reference and self.peft.method != "none":
            raise ConfigError(
                "`reference` cannot be set with LoRA/QLoRA: the reference is the model under the adapter "
                "(`model.path`); to use another reference, train with `peft.method: none`"
            )
