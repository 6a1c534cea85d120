"""Configuration of `rlhf generate`: what to sample for, how many per prompt, and (best-of-N) the
reward that picks the kept one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rlhf.config.core import ConfigError
from rlhf.config.engine import EngineName, VllmConfig
from rlhf.config.parts import DataConfig, ModelConfig, PromptConfig
from rlhf.generation.config import SamplingConfig, check_draws
from rlhf.rewards.config import RewardSourcesConfig

DEFAULT_OUTPUT = "runs/generate/completions.jsonl"


@dataclass
class GenerateConfig:
    RENAMED: ClassVar[dict[str, str]] = {"reward_model": "reward.model"}

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to sample from: a hub id, a directory (a saved SFT model or adapter) or `builtin:tiny`."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """How each prompt becomes the text the model sees (chat, instruction or raw; few-shot; system
    prompt). Use the same settings the model was fine-tuned with."""
    data: DataConfig = field(default_factory=DataConfig)
    """The prompts: a file of any format (`prompts`, or the prompt part of any other format). Prompts
    longer than `data.max_prompt_length` tokens lose their start; `data.limit` takes the first N."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How each completion is decoded."""
    samples_per_prompt: int = 1
    """Completions drawn per prompt (K): the candidates people compare and rank."""
    unique: bool = True
    """Re-draw a completion whose text equals an earlier one of the same prompt (up to
    `max_retries` more rounds); any still repeated then are kept and counted in the summary."""
    max_retries: int = 3
    """Rounds of re-drawing repeated completions (with `unique`); 0: never re-draw."""
    best_of: int = 1
    """Best-of-N (rejection sampling): draw N completions per prompt, score them with `reward` and
    keep the highest scored one. The output is then one `prompt_completion` row per prompt, which
    `rlhf sft` trains on as it is (rejection-sampling fine-tuning). The N draws are independent
    (`unique` does not apply) and `samples_per_prompt` must stay 1. 1: off (plain sampling,
    `candidates` rows)."""
    reward: RewardSourcesConfig = field(default_factory=RewardSourcesConfig)
    """What scores the best-of-N draws: a reward model (`reward.model`: `rlhf reward` output or any
    one-label sequence classifier, in its own tokenizer), a Python function, an endpoint, or a
    weighted sum of them. Needed when `best_of` is above 1."""
    output: str = DEFAULT_OUTPUT
    """JSONL file to write: one `candidates` row per prompt (`rlhf data formats` describes it), or
    with `best_of` one best-of-N row per prompt. It is written whole at the end (through a
    temporary file), so a failed run never leaves half a file."""
    progress: bool = True
    """Show a progress bar (on stderr) while generating."""
    engine: EngineName = "hf"
    """What samples: `hf` (transformers' `generate`), `vllm` (a vLLM engine started on the model's
    weights; much faster at size) or `auto` (vLLM when installed and able to run the model)."""
    vllm: VllmConfig = field(default_factory=VllmConfig)
    """The vLLM engine's settings (with `engine: vllm` or `auto`)."""

    def __post_init__(self) -> None:
        if not self.output:
            raise ConfigError("`output` must not be empty")
        if self.best_of < 1:
            raise ConfigError(f"`best_of` must be at least 1 (1: off), got {self.best_of}")
        check_draws(
            self.sampling, self.samples_per_prompt, self.unique and self.best_of == 1, self.max_retries
        )
        if self.best_of == 1:
            if self.reward.all_sources():
                raise ConfigError("`reward` is only used with `best_of` above 1; set `best_of` (--best-of N)")
            return
        if not self.reward.all_sources():
            raise ConfigError(
                f"`best_of` {self.best_of} needs `reward`: what scores the draws, e.g. `reward.model` "
                "(--reward-model DIR)"
            )
        if self.samples_per_prompt != 1:
            raise ConfigError(
                f"`samples_per_prompt` must be 1 with `best_of` {self.best_of}: best-of-N draws "
                f"`best_of` completions per prompt itself and keeps one (got {self.samples_per_prompt})"
            )
        if self.sampling.greedy:
            raise ConfigError(
                f"`best_of` {self.best_of} needs `sampling.temperature` above 0: greedy decoding draws "
                "the same completion every time"
            )
