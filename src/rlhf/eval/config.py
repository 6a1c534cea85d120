"""Config of `rlhf eval policy`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config.core import ConfigError
from rlhf.config.parts import DataConfig, ModelConfig, PromptConfig
from rlhf.generation.config import SamplingConfig


@dataclass
class EvalPolicyConfig:
    """`rlhf eval policy`: a policy against a baseline on held-out prompts."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy to evaluate (e.g. runs/ppo/policy); its tokenizer renders the prompts."""
    baseline: str | None = None
    """A baseline policy directory (e.g. the SFT model), loaded with `model`'s settings: it answers the
    same prompts, and the win rate compares the two. None: the policy alone."""
    reference: str | None = None
    """The model KL(policy ‖ reference) is measured against (same tokenizer as the policy); default:
    the baseline. None with no baseline: no KL."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """How prompts are rendered; the settings the policy was trained with."""
    data: DataConfig = field(default_factory=DataConfig)
    """Held-out prompts: any format with prompts (`data.limit` takes the first N)."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64))
    """How both policies answer (one sample per prompt by default). The KL is measured on the
    temperature-scaled distributions the samples were drawn from."""
    reward: str | None = None
    """A reward model directory that scores every answer (its own tokenizer)."""
    gold: str | None = None
    """A gold scoring function `module:function` or `path/file.py:function`, called as
    fn(prompts, completions) -> scores (the task's ground truth, where there is one)."""
    judge: Literal["auto", "gold", "reward"] = "auto"
    """Which score decides the headline win rate (both are reported when both are given); `auto`:
    gold when given, else the reward model."""
    tie_tolerance: float = 0.0
    """Score differences up to this count as ties (half a win)."""
    output_dir: str = "runs/eval"
    """Where `eval.json` (every metric) and `samples.jsonl` (every answer and its scores) go."""
    show: int = 5
    """Side-by-side samples printed at the end."""
    batch_size: int = 16
    """Sequences per forward pass when scoring and measuring KL."""
    device: str | None = None
    """`cpu`, `cuda`, ...; default: the GPU when there is one."""
    progress: bool = True
    """Show progress bars (on stderr)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("`batch_size` must be at least 1")
        if self.tie_tolerance < 0:
            raise ConfigError("`tie_tolerance` must be 0 or more")
        if self.judge == "gold" and not self.gold:
            raise ConfigError("`judge: gold` needs `gold: module:function`")
        if self.judge == "reward" and not self.reward:
            raise ConfigError("`judge: reward` needs `reward: <reward model directory>`")
