"""Configuration of `rlhf ppo`: the shared parts plus one group per concern of the algorithm.

rollout    what each step samples (prompts, samples per prompt, sampling) and with what engine
reward     where r(x, y) comes from (reward model, Python function, HTTP, weighted sum) and its shaping
kl         the leash to the reference model (coefficient, estimator, controller, placement)
advantage  GAE with a critic, or a critic-free estimator (REINFORCE, RLOO, GRPO)
loss       PPO's clipped objectives, entropy bonus, PPO-ptx, early stop
critic     the value function: a head on the policy or a model of its own
guards     when a runaway KL is flagged (NaN/inf: the top-level `max_nonfinite`)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rlhf.config.core import ConfigError
from rlhf.config.engine import EngineName, VllmConfig
from rlhf.config.parts import (
    DataConfig,
    LoggingConfig,
    ModelConfig,
    OptimizerConfig,
    PeftConfig,
    PromptConfig,
    RunControl,
)
from rlhf.generation.config import SamplingConfig
from rlhf.rewards.config import RewardSourcesConfig


@dataclass
class RolloutConfig:
    RENAMED: ClassVar[dict[str, str]] = {"completions_per_prompt": "samples_per_prompt"}

    prompts_per_step: int = 8
    """Prompts each process samples per PPO step (the step's rollout is prompts x samples)."""
    samples_per_prompt: int = 1
    """Completions drawn per prompt. RLOO and GRPO compare the completions of a prompt with each
    other, so they need at least 2; PPO with a critic usually uses 1."""
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_new_tokens=32, seed=None, batch_size=64)
    )
    """Temperature, top-p/top-k, max new tokens, stop strings, and `batch_size` (sequences per
    `generate` call). `seed` must stay null: rollouts draw from the run's random stream, which the
    top-level `seed` starts."""
    forward_batch_size: int = 16
    """Sequences per forward pass when computing the rollout's old log-probabilities, reference
    log-probabilities and values (no gradients): bounds the memory of the scoring passes."""
    engine: EngineName = "hf"
    """What samples the rollouts: `hf` (transformers' `generate` on the policy), `vllm` (a vLLM
    engine in each training process, synced with the policy after every update; see `vllm`), or
    `auto` (vLLM when installed and able to run the model, else `hf`). The trainer recomputes the
    log-probabilities the PPO ratio is taken against either way."""
    vllm: VllmConfig = field(default_factory=VllmConfig)
    """The vLLM engine's memory and weight-sync settings (with `engine: vllm` or `auto`)."""
    tis_cap: float | None = None
    """With an engine that reports its own log-probabilities (vLLM): weight each token's policy
    loss by min(π_trainer / π_engine, tis_cap), truncated importance sampling, to correct for the
    engine's slightly different numbers (e.g. 2.0). None: no correction. The mismatch is logged
    either way (`ppo/engine_kl`)."""

    def __post_init__(self) -> None:
        if self.prompts_per_step < 1 or self.samples_per_prompt < 1 or self.forward_batch_size < 1:
            raise ConfigError(
                "`rollout.prompts_per_step`, `samples_per_prompt` and `forward_batch_size` must be >= 1"
            )
        if self.sampling.seed is not None:
            raise ConfigError(
                "`rollout.sampling.seed` must be null: rollouts draw from the run's random stream (set `seed`)"
            )
        if self.tis_cap is not None and self.tis_cap < 1.0:
            raise ConfigError(f"`rollout.tis_cap` must be at least 1 (or null: off), got {self.tis_cap}")


@dataclass
class KLConfig:
    coef: float = 0.05
    """β: weight of the KL penalty to the reference (the SFT model). Larger keeps the policy closer
    to where it started, which keeps the reward model on text it knows (guards reward hacking)."""
    estimator: Literal["auto", "k1", "k2", "k3"] = "auto"
    """Per-token KL estimate from log p (policy) and log q (reference): k1 = log p - log q
    (unbiased, may be negative per token), k2 = (log p - log q)^2 / 2, k3 = (q/p - 1) - log(q/p)
    (unbiased and never negative; Schulman's). `auto`: k1 in the reward; k2 in the loss, whose
    gradient on the policy's own samples is the exact gradient of KL(π‖π_ref) (k1 there has a
    gradient of mean zero: no leash at all, so it is refused). The logged `kl`, the guard and the
    adaptive controller always use k1 summed over the completion."""
    controller: Literal["fixed", "adaptive"] = "fixed"
    """`fixed` keeps β; `adaptive` moves β so the measured KL approaches `target` (Ziegler et al.
    2019): β *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon after each step of n sequences."""
    target: float = 6.0
    """Adaptive controller: the KL (nats per sequence, summed over tokens) to aim for."""
    horizon: int = 10000
    """Adaptive controller: sequences over which β may move by about e^0.2."""
    placement: Literal["auto", "reward", "loss"] = "auto"
    """`reward`: -β KL_t is added to every token's reward (InstructGPT); `loss`: β KL_t is a term of
    the policy loss at every token (GRPO), and the reward holds only r(x, y). `auto`: `reward` with
    a critic (GAE hands each token's penalty to the tokens before it), `loss` with the critic-free
    estimators: they give every token of a completion one advantage, so a penalty summed into the
    reward would fall on the whole answer, not on the tokens that drifted, and one answer that ran
    away (hundreds of nats) would swamp the whitened advantages of its step. See the README's demo."""

    def __post_init__(self) -> None:
        if self.coef < 0 or self.target <= 0 or self.horizon < 1:
            raise ConfigError("`kl.coef` must be >= 0, `kl.target` > 0 and `kl.horizon` >= 1")


@dataclass
class AdvantageConfig:
    estimator: Literal["gae", "reinforce", "rloo", "grpo"] = "gae"
    """`gae`: a learned value baseline (the critic) with GAE(γ, λ). Critic-free: `reinforce`
    (baseline = moving average of rewards), `rloo` (baseline = mean reward of the prompt's other
    completions), `grpo` (the reward standardized within its prompt's group). Critic-free
    estimators give every token of a completion the same advantage."""
    gamma: float = 1.0
    """GAE discount per token (1: no discount, the usual choice for text)."""
    lam: float = 0.95
    """GAE λ: 1 is the Monte-Carlo return minus the value (unbiased, noisy), 0 is one-step TD."""
    whiten: bool = True
    """Shift and scale the advantages of a rollout to mean 0 and std 1 over its real tokens
    (stabilizes the step size). GRPO's group normalization is applied before it."""
    baseline_decay: float = 0.9
    """`reinforce`: decay of the moving-average baseline (higher moves slower)."""
    grpo_scale: bool = True
    """`grpo`: divide by the group's standard deviation (false: only subtract the mean, as Dr. GRPO)."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0 and 0.0 <= self.baseline_decay < 1.0):
            raise ConfigError("`advantage.gamma` and `lam` must be in [0, 1], `baseline_decay` in [0, 1)")


@dataclass
class PpoLossConfig:
    clip_eps: float = 0.2
    """ε of the clipped surrogate: the new/old probability ratio counts only inside [1-ε, 1+ε]."""
    value_clip: float | None = 0.2
    """Clip the new value to within this of the rollout's value (null: unclipped MSE)."""
    value_coef: float = 0.5
    """Weight of the value loss (shared backbone: against the policy loss; separate critic: its own loss scale)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (keeps sampling from collapsing early)."""
    ptx_coef: float = 0.0
    """γ_ptx of PPO-ptx: weight of a language-modeling loss on `ptx_data` added to each update, so the
    policy keeps its pretraining/SFT abilities (InstructGPT). 0: off."""
    ptx_data: DataConfig = field(default_factory=DataConfig)
    """Demonstration or plain-text data for the PPO-ptx loss (any SFT format)."""
    ptx_batch_size: int = 4
    """PPO-ptx examples per optimizer step on each process."""
    target_kl: float | None = None
    """Stop the step's PPO epochs early once the approximate KL between the rollout policy and the
    updated one exceeds this (null: always run every epoch)."""

    def __post_init__(self) -> None:
        if self.clip_eps <= 0 or (self.value_clip is not None and self.value_clip <= 0):
            raise ConfigError("`loss.clip_eps` and `loss.value_clip` must be positive")
        if min(self.value_coef, self.entropy_coef, self.ptx_coef) < 0 or self.ptx_batch_size < 1:
            raise ConfigError("loss coefficients must be >= 0 and `loss.ptx_batch_size` >= 1")
        if self.ptx_coef > 0 and not self.ptx_data.path:
            raise ConfigError("`loss.ptx_coef` > 0 needs `loss.ptx_data.path`")


@dataclass
class CriticConfig:
    mode: Literal["shared", "separate"] = "shared"
    """`shared`: a value head (Linear(hidden, 1)) on the policy's own last hidden states: one forward
    pass gives log-probabilities and values, and with LoRA the actor, the reference (adapter off) and
    the critic share one base model in memory. `separate`: a model of its own (`model`)."""
    model: str | None = None
    """`separate`: the critic's starting weights (a causal LM or one-label classifier; a critic saved
    by an earlier run); default: the reward model when `init_from_reward`, else the policy's `model.path`."""
    init_from_reward: bool = False
    """Start the critic from the reward model (`reward.model`): `separate` loads its weights; `shared`
    copies its head when the hidden sizes match (it then predicts the reward from the start)."""
    lr: float | None = None
    """Learning rate of the critic's own parameters (value head or separate model); default: `optimizer.lr`."""
    warmup_steps: int = 0
    """PPO steps at the start that train only the critic, with the policy frozen: advantages are
    noise until the value function has learned something."""

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError("`critic.warmup_steps` must be >= 0")


@dataclass
class GuardConfig:
    RENAMED: ClassVar[dict[str, str]] = {"max_nonfinite": "../max_nonfinite"}

    kl_warn_factor: float = 3.0
    """Flag a step whose KL to the reference exceeds this many times `kl.target` (adaptive
    controller) or `kl_warn_above` (fixed)."""
    kl_warn_above: float = 20.0
    """With a fixed β: the KL (nats per sequence) over which a step is flagged."""


@dataclass
class HeldoutConfig:
    """PPO's held-out evaluation (`rlhf.ppo.heldout`)."""

    path: str | None = None
    """Held-out prompts (any format with prompts) the policy answers every `every` steps; None: no
    held-out evaluation."""
    every: int = 10
    """Evaluate every N PPO steps (and at the last)."""
    limit: int | None = 64
    """At most this many held-out prompts (null: all)."""
    score: str = "gold"
    """The reward source whose score on the held-out answers is the independent one (logged as
    `ppo/heldout/<score>`, and what `select: best_heldout` keeps the best of): usually a weight-0
    source that is not the reward model, e.g. the pipeline's `gold`."""
    temperature: float = 0.0
    """Sampling temperature of the held-out answers (0: greedy, the least noisy comparison)."""

    def __post_init__(self) -> None:
        if self.every < 1 or (self.limit is not None and self.limit < 1) or self.temperature < 0:
            raise ConfigError("`heldout.every` and `heldout.limit` must be >= 1, `heldout.temperature` >= 0")


@dataclass
class PpoConfig(RunControl):
    RENAMED: ClassVar[dict[str, str]] = {"steps": "max_steps"}

    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy to start from: the SFT model (directory or adapter), a hub id, or `builtin:tiny`.
    The reference model is this same model, frozen, unless `reference` names another."""
    reference: str | None = None
    """The frozen model the KL is measured from, when it is not the starting policy: e.g. the SFT
    model while PPO starts from an earlier round's policy (`rlhf pipeline` with `rounds`), so every
    round is leashed to the same place. It is loaded as a separate frozen copy (also under LoRA)
    and needs the policy's tokenizer. None: `model.path`."""
    peft: PeftConfig = field(default_factory=lambda: PeftConfig(method="lora"))
    """`lora` (default) or `qlora`: the reference is the base with the adapter switched off (no second
    copy); `none`: full fine-tuning with a separate frozen reference copy. Prompt tuning is not supported."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prompts: any format (`prompts`, or the prompt part of comparisons, rankings, demonstrations...).
    `data.max_prompt_length` cuts long prompts from the left."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """Prompt layout for the policy: use the settings the SFT model was trained with."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """What each step samples."""
    reward: RewardSourcesConfig = field(default_factory=RewardSourcesConfig)
    """Where the reward comes from and how it is shaped."""
    kl: KLConfig = field(default_factory=KLConfig)
    """The KL penalty to the reference model."""
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    """How advantages are estimated."""
    loss: PpoLossConfig = field(default_factory=PpoLossConfig)
    """PPO's objective."""
    critic: CriticConfig = field(default_factory=CriticConfig)
    """The value function (`advantage.estimator: gae` only)."""
    guards: GuardConfig = field(default_factory=GuardConfig)
    """When a runaway KL is flagged."""
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=1e-5, scheduler="constant"))
    """AdamW for the policy (and, unless `critic.lr`, the critic), clipping, and
    `gradient_accumulation_steps`: micro-batches each minibatch is split into."""
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(log_every=1))
    """Metric frequency, TensorBoard, progress bar."""
    output_dir: str = "runs/ppo"
    """Run directory: the resolved config, metrics, checkpoints and the trained model go here. A run
    that does not resume refuses one that holds an earlier run's checkpoints (`--overwrite`)."""
    max_steps: int = 100
    """PPO steps to train: each samples a rollout and runs `ppo_epochs` passes of updates over it."""
    ppo_epochs: int = 4
    """Passes over each rollout (the rollout's sequences are reshuffled into minibatches every pass)."""
    minibatch_size: int = 8
    """Sequences per optimizer step on each process; split into `optimizer.gradient_accumulation_steps`
    micro-batches. Must divide the rollout (prompts_per_step x samples_per_prompt)."""
    samples_every: int = 10
    """Every N steps log a table of sampled prompts, completions and rewards (`samples.jsonl` and
    TensorBoard text); 0: never."""
    samples_count: int = 4
    """Rows in each samples table."""
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    """Held-out prompts answered every few steps and scored by an independent source (`score`)."""
    select: Literal["last", "best_heldout"] = "last"
    """Which policy to save: the `last` step's, or the one of the step with the best held-out
    independent score (`best_heldout`, needs `heldout.path`; not under FSDP or ZeRO-3 sharding),
    said in one line with the last step's score. The kept weights live in memory: a resumed run
    chooses among the evaluations made after the resume."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_steps < 1 or self.ppo_epochs < 1 or self.minibatch_size < 1:
            raise ConfigError("`max_steps`, `ppo_epochs` and `minibatch_size` must be at least 1")
        if self.peft.method == "prompt_tuning":
            raise ConfigError("`peft.method: prompt_tuning` is not supported by PPO; use lora, qlora or none")
        rollout = self.rollout.prompts_per_step * self.rollout.samples_per_prompt
        if rollout % self.minibatch_size:
            raise ConfigError(
                f"`minibatch_size` {self.minibatch_size} must divide the rollout of {rollout} sequences "
                "(`rollout.prompts_per_step` x `rollout.samples_per_prompt`)"
            )
        if self.minibatch_size % self.optimizer.gradient_accumulation_steps:
            raise ConfigError("`optimizer.gradient_accumulation_steps` must divide `minibatch_size`")
        if self.advantage.estimator in ("rloo", "grpo") and self.rollout.samples_per_prompt < 2:
            raise ConfigError(
                f"`advantage.estimator: {self.advantage.estimator}` compares the completions of a prompt: "
                "set `rollout.samples_per_prompt` to 2 or more"
            )
        if self.select == "best_heldout" and not self.heldout.path:
            raise ConfigError("`select: best_heldout` needs `heldout.path` (held-out prompts to score)")
        if self.heldout.path and any(s.judge for s in self.reward.all_sources()):
            raise ConfigError(
                "`heldout` answers each prompt once, and a judge reward compares a prompt's samples: "
                "use `heldout` without a `judge` reward source"
            )
        if self.samples_every < 0 or self.samples_count < 0:
            raise ConfigError("`samples_every` and `samples_count` must be >= 0")
        if self.kl_placement == "loss" and self.kl_estimator == "k1":
            raise ConfigError(
                "`kl.estimator: k1` in the loss has a gradient of mean zero (no leash): use k2 (the exact "
                "KL gradient on the policy's samples), k3, or `kl.placement: reward`"
            )

    @property
    def uses_critic(self) -> bool:
        return self.advantage.estimator == "gae"

    @property
    def kl_placement(self) -> Literal["reward", "loss"]:
        """Where the KL penalty goes, `auto` resolved: the reward with a critic, else the loss."""
        if self.kl.placement != "auto":
            return self.kl.placement
        return "reward" if self.uses_critic else "loss"

    @property
    def kl_estimator(self) -> Literal["k1", "k2", "k3"]:
        """The penalty's per-token estimator, `auto` resolved: k1 in the reward, k2 in the loss."""
        if self.kl.estimator != "auto":
            return self.kl.estimator
        return "k1" if self.kl_placement == "reward" else "k2"
