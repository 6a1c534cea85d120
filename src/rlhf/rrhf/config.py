"""Configuration of `rlhf rrhf`: the shared parts plus where the ranked responses come from and
how the ranking and SFT terms are weighed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

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
from rlhf.generation.config import SamplingConfig, check_draws
from rlhf.rewards.config import RewardSourcesConfig


@dataclass
class RrhfConfig(EpochRunControl):
    RENAMED: ClassVar[dict[str, str]] = {
        "reward_model": "reward.model",
        "reward_batch_size": "reward.batch_size",
    }

    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy to start from: the SFT model (directory, hub id, or `builtin:tiny`)."""
    peft: PeftConfig = field(default_factory=PeftConfig)
    """Full fine-tuning (`none`), LoRA or QLoRA; prompt tuning is not supported."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prompts and their responses. Rankings or comparisons (e.g. an `rlhf label export`) bring
    responses ranked by people; candidates (`rlhf generate` output, e.g. other models' answers)
    bring unscored responses for `reward` to score; any other kind brings only its prompts
    (for `samples_per_prompt`)."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """How prompts are laid out: the settings the SFT model was trained with."""
    reward: RewardSourcesConfig = field(default_factory=RewardSourcesConfig)
    """What scores every response of a prompt, data and samples alike: a reward model
    (`reward.model`: `rlhf reward` output, in its own tokenizer and template), a function, an
    endpoint, or a weighted sum (their raw scores); people's ranks are then not used. Unset: the
    responses are scored by people's ranks (score = -rank), which needs rankings or comparisons."""
    samples_per_prompt: int = 0
    """K responses sampled from the starting policy for every prompt, before training, and added to
    the prompt's responses (needs `reward` to score them). With a reward the responses of a prompt
    are pooled over every record of that prompt; the samples depend on the number of processes
    (each samples its share of the prompts)."""
    unique: bool = True
    """Re-draw a sample whose text equals an earlier one of the same prompt (up to `max_retries`
    more rounds); any still repeated then are kept."""
    max_retries: int = 3
    """Rounds of re-drawing repeated samples (with `unique`); 0: never re-draw."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How each sample is decoded (temperature, top-p, max_new_tokens, seed, ...)."""
    include_data_responses: bool = True
    """Train on the responses found in `data` (false: only on the samples; the file gives prompts)."""
    rank_weight: float = 1.0
    """Weight of the ranking loss Σ_{s_i<s_j} max(0, p_i - p_j) (summed over each prompt's pairs)."""
    sft_weight: float = 1.0
    """Weight of the SFT loss: the mean token negative log-likelihood of each prompt's best-scored
    response (the paper: L = L_rank + L_ft, i.e. 1)."""
    length_normalize: bool = True
    """p_i = the mean token log-prob of response i (the paper's choice; false: the summed log-prob,
    which favors short responses in the ranking)."""
    eval: HeldOutConfig = field(default_factory=HeldOutConfig)
    """Held-out prompts: the same loss terms and ranking accuracy, without gradients."""
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-6, warmup_ratio=0.1))
    """AdamW, learning-rate schedule, gradient clipping and accumulation (the paper fine-tunes with a
    small learning rate; raise it for adapters or tiny models)."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Metric frequency, TensorBoard, progress bar."""
    output_dir: str = "runs/rrhf"
    """Run directory: the resolved config, metrics, checkpoints and the trained model go here. A run
    that does not resume refuses one that holds an earlier run's checkpoints (`--overwrite`)."""
    batch_size: int = 4
    """Groups (a prompt with its K responses) per micro-batch on each process; every response of a
    micro-batch goes through the model in one forward pass."""
    packing: bool = True
    """Lay the responses of a micro-batch end to end in rows of up to `data.max_length` tokens
    (position ids restart per sequence) instead of one padded row each. Checked on the first
    micro-batch: if the model lets packed sequences see each other, the run says so and pads."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be at least 1, got {self.batch_size}")
        for name in ("rank_weight", "sft_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"`{name}` must be >= 0, got {getattr(self, name)}")
        if self.rank_weight == 0 and self.sft_weight == 0:
            raise ConfigError("`rank_weight` and `sft_weight` are both 0: nothing to train")
        if self.peft.method == "prompt_tuning":
            raise ConfigError("`peft.method: prompt_tuning` is not supported by rrhf; use lora or qlora")
        self._check_responses()

    def _check_responses(self) -> None:
        if self.samples_per_prompt < 0:
            raise ConfigError(f"`samples_per_prompt` must be >= 0, got {self.samples_per_prompt}")
        if self.samples_per_prompt and not self.reward.all_sources():
            raise ConfigError(
                "`samples_per_prompt` draws responses nobody ranked: set `reward` (e.g. `reward.model`) to score them"
            )
        if self.samples_per_prompt:
            check_draws(self.sampling, self.samples_per_prompt, self.unique, self.max_retries)
        if not self.include_data_responses and self.samples_per_prompt < 2:
            raise ConfigError(
                "`include_data_responses: false` trains on samples only: set `samples_per_prompt` to 2 or more"
            )
