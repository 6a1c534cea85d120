"""Config of `rlhf eval policy`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config.core import ConfigError
from rlhf.config.engine import EngineName, VllmConfig
from rlhf.config.parts import DataConfig, ModelConfig, PromptConfig
from rlhf.generation.config import SamplingConfig
from rlhf.rewards.config import RewardSourcesConfig


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
    the baseline. None with no baseline: no KL. Not with `best_of` above 1 (its KL is analytic)."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """How prompts are rendered; the settings the policy was trained with."""
    data: DataConfig = field(default_factory=DataConfig)
    """Held-out prompts: any format with prompts (`data.limit` takes the first N)."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64))
    """How both policies answer (one sample per prompt by default). The KL is measured on the
    temperature-scaled distributions the samples were drawn from."""
    reward: RewardSourcesConfig = field(default_factory=RewardSourcesConfig)
    """What scores every answer as the `reward` judge: a reward model (`reward.model`, in its own
    tokenizer), a function, an endpoint, or a weighted sum (their raw scores)."""
    best_of: int = 1
    """The policy answers each prompt with the best of N of its own samples, as `best_of_reward`
    (default: `reward`) scores them (best-of-N; the baseline still answers with one plain sample). Its KL is then not
    measured but reported as the analytic KL(best-of-N ‖ policy) = log N − (N−1)/N, exact for
    distinct samples and an upper bound in general. 1: one plain sample."""
    best_of_reward: RewardSourcesConfig = field(default_factory=RewardSourcesConfig)
    """What picks the best of the N samples (the same shape as `reward`); unset: `reward`. Picking
    and judging with the same model overstates the gain (the pick exploits its errors): a separate
    model, or a `gold` function, gives the honest score."""
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
    engine: EngineName = "hf"
    """What samples the answers (policy and baseline): `hf`, `vllm` or `auto` (see `rlhf generate`).
    The KL and the scores are computed by the trainer's code either way."""
    vllm: VllmConfig = field(default_factory=VllmConfig)
    """The vLLM engine's settings (with `engine: vllm` or `auto`)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("`batch_size` must be at least 1")
        if self.tie_tolerance < 0:
            raise ConfigError("`tie_tolerance` must be 0 or more")
        if self.judge == "gold" and not self.gold:
            raise ConfigError("`judge: gold` needs `gold: module:function`")
        if self.judge == "reward" and not self.reward.all_sources():
            raise ConfigError(
                "`judge: reward` needs `reward` (e.g. `reward.model: <reward model directory>`)"
            )
        if self.best_of < 1:
            raise ConfigError(f"`best_of` must be at least 1 (1: off), got {self.best_of}")
        if self.best_of == 1:
            if self.best_of_reward.all_sources():
                raise ConfigError("`best_of_reward` is only used with `best_of` above 1")
            return
        if not self.picker.all_sources():
            raise ConfigError(
                f"`best_of` {self.best_of} needs a reward to pick with: set `best_of_reward` or `reward`"
            )
        if self.reference:
            raise ConfigError(
                f"`reference` cannot be used with `best_of` {self.best_of}: the KL of best-of-N is the "
                "analytic KL(best-of-N ‖ policy), not measured against a reference"
            )
        if self.sampling.greedy:
            raise ConfigError(
                f"`best_of` {self.best_of} needs `sampling.temperature` above 0: greedy decoding draws "
                "the same answer every time"
            )

    @property
    def picker(self) -> RewardSourcesConfig:
        """What picks the best of N: `best_of_reward`, else `reward`."""
        return self.best_of_reward if self.best_of_reward.all_sources() else self.reward
