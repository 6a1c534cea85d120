"""Configuration of `rlhf pipeline`: every stage's own config, plus how the stages are wired.

The pipeline fills the fields that connect the stages (each stage's model path, data path and
run directory) from the run directory, so a stage's section holds only what is its own: steps,
learning rates, sampling. Those wiring fields are listed in `WIRED` and said so in `--print-config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config.core import ConfigError
from rlhf.config.engine import EngineName, VllmConfig
from rlhf.config.parts import DataConfig, LoggingConfig, PromptConfig
from rlhf.dpo.config import DpoConfig
from rlhf.eval.config import AlignmentTaxConfig, EvalPolicyConfig
from rlhf.generate.config import GenerateConfig
from rlhf.generation.config import SamplingConfig
from rlhf.judge.config import JudgeConfig
from rlhf.ppo.config import PpoConfig
from rlhf.reward.config import RewardConfig
from rlhf.rrhf.config import RrhfConfig
from rlhf.sft.config import SftConfig

METHODS = ("ppo", "dpo", "rrhf", "best_of_n", "rejection_sampling")
"""The methods the last stage can be, each from the same SFT model and the same feedback."""
STAGES = ("sft", "generate", "feedback", "reward", *METHODS, "eval", "report")
"""The stages in order; each writes into `<output_dir>/<stage>/` (the report: `report.html`).
A method stage runs only when `methods` names it (best-of-N trains nothing: it is evaluated)."""

WIRED = {
    "sft": ("output_dir", "prompt"),
    "generate": ("model.path", "output", "prompt"),
    "reward": ("model.path", "data.path", "eval.path", "eval.fraction", "output_dir", "prompt"),
    "ppo": ("model.path", "reference", "reward.model", "output_dir", "prompt"),
    "dpo": ("model.path", "data.path", "eval.path", "eval.fraction", "output_dir", "prompt"),
    "rrhf": ("model.path", "reward.model", "data.path", "output_dir", "prompt"),
    "rejection_sampling": ("sft.model.path", "sft.data.path", "sft.output_dir", "sft.prompt"),
    "eval": ("model.path", "baseline", "reference", "reward", "gold", "output_dir", "prompt", "best_of"),
}
"""Fields of each stage's section that the pipeline sets itself (a value given there is replaced)."""


@dataclass
class FeedbackConfig:
    source: Literal["simulate", "people", "file", "judge"] = "simulate"
    """`simulate`: simulated labelers judge pairs of the generated candidates by the task's `gold`
    function (Bradley-Terry: the better one wins with probability sigmoid(Δgold / temperature));
    `people`: the pairs go into a labeling project (`rlhf label`) and the pipeline stops until
    `labelers` people have judged each (rerun it then); `file`: preferences people gave, e.g. the
    export of `rlhf label` (`path`); `judge`: an LLM judge (`feedback.judge`) labels the pairs,
    both orders asked, its ties and abstentions left out and counted."""
    judge: JudgeConfig | None = None
    """`source: judge`: the LLM judge (`url`, `model_name`, `template`, ...; see `rlhf.judge`)."""
    path: str | None = None
    """`source: file`: comparisons or rankings (any format the reward stage reads, JSONL)."""
    labelers: int = 3
    """`simulate` and `people`: labelers judging each pair (the labeling project's overlap); the
    pair's label is their majority (`resolve`)."""
    temperature: float = 1.0
    """`simulate`: Bradley-Terry temperature in gold-score units: higher, noisier labelers (1.0 puts
    agreement between two labelers near 75% on the demo task, about what people reach)."""
    resolve: Literal["majority", "all"] = "majority"
    """`simulate` and `people`: one row per pair by majority vote, or every judgment as its own row
    with weight 1/labelers (as `rlhf label export --resolve all`)."""
    annotators: list[str] = field(default_factory=lambda: ["annotator"])
    """`people`: the names to create in the labeling project; each gets a login link, printed once
    and kept (mode 0600) in `feedback/project/links.txt`."""
    database: str | None = None
    """`people`: the PostgreSQL URL of the labeling project (None: SQLite in `feedback/project`).
    One project per database: with `rounds`, write `{round}` in the database name
    (`postgresql://me@db/rlhf_round_{round}`); a database not there yet is created."""
    instructions: str = "Pick the answer that is more helpful, correct and harmless."
    """`people`: the text shown to labelers above every pair."""
    take_what_is_there: bool = False
    """`people`: go on with the judgments given so far instead of waiting for every pair's
    `labelers` (pairs without any are left out, and counted)."""
    heldout_fraction: float = 0.15
    """Share of prompts whose pairs are kept out of reward training, for its held-out accuracy."""
    seed: int = 0
    """Seed of the simulated labelers, of the held-out split and of the pair selection."""
    select: Literal["all", "random", "uncertainty", "disagreement"] = "all"
    """`simulate`: which pairs of the training prompts' candidates are labeled: `all` of them, or
    `budget` of them (`rlhf.active`): a seeded `random` sample, the pairs whose preference the
    reward models of `select_with` predict closest to 1/2 (`uncertainty`), or those they disagree
    on most (`disagreement`, two or more). Held-out prompts' pairs are all labeled (they measure
    the reward model; they are not in the budget)."""
    budget: int | None = None
    """Pairs of training prompts labeled when `select` is not `all` (each by `labelers` labelers)."""
    per_prompt: int | None = None
    """At most this many selected pairs from one prompt (null: no cap), to spread the budget."""
    select_with: list[str] = field(default_factory=list)
    """Reward models (directories) or functions (`module:function`) whose scores the `uncertainty`
    and `disagreement` rules read. With `rounds`, each round after the first also reads the
    previous round's reward model; a round with too few models to go on (the first) picks at random."""

    def models_needed(self) -> int:
        """Reward models the selection rule reads (0 for `all` and `random`)."""
        return {"uncertainty": 1, "disagreement": 2}.get(self.select, 0)

    def __post_init__(self) -> None:
        if self.select != "all" and (self.budget is None or self.budget < 1):
            raise ConfigError(
                f"`feedback.select: {self.select}` needs a positive `feedback.budget` (pairs to label)"
            )
        if self.per_prompt is not None and self.per_prompt < 1:
            raise ConfigError(f"`feedback.per_prompt` must be at least 1 (or null), got {self.per_prompt}")
        if self.source == "judge" and not (self.judge and self.judge.served):
            raise ConfigError(
                "`feedback.source: judge` needs `feedback.judge` (its `url` and `model_name`, or a local `model`)"
            )
        if self.source == "file" and not self.path:
            raise ConfigError(
                "`feedback.source: file` needs `feedback.path` (e.g. an `rlhf label export` file)"
            )
        if self.labelers < 1 or self.temperature <= 0:
            raise ConfigError("`feedback.labelers` must be >= 1 and `feedback.temperature` > 0")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError("`feedback.heldout_fraction` must be between 0 and 1")


@dataclass
class BestOfNConfig:
    n: int = 4
    """Samples the SFT policy draws per prompt; the reward model keeps the one it scores highest.
    Nothing is trained: the cost is paid at answer time (n samples and n reward-model scores)."""

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ConfigError(f"`best_of_n.n` must be at least 2, got {self.n}")


def _rejection_sft() -> SftConfig:
    return SftConfig(epochs=2.0, logging=LoggingConfig(log_every=10))


@dataclass
class RejectionSamplingConfig:
    n: int = 4
    """Samples the SFT policy draws per prompt; the best by the reward model becomes a demonstration."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prompts to draw for; without `path`: the PPO prompts (`ppo.data`), cut to `limit` if set here."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64))
    """How each of the `n` draws of a prompt is decoded (repeats are kept)."""
    sft: SftConfig = field(default_factory=_rejection_sft)
    """Fine-tuning of the SFT model on the best-of-n answers (its learning rate, steps, LoRA, ...)."""

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ConfigError(f"`rejection_sampling.n` must be at least 2, got {self.n}")


def _generate_defaults() -> GenerateConfig:
    return GenerateConfig(sampling=SamplingConfig(max_new_tokens=64), samples_per_prompt=4, unique=False)


@dataclass
class PipelineConfig:
    output_dir: str = "runs/pipeline"
    """The run directory: one folder per stage, `config.yaml`, `summary.json` and `report.html`."""
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    """Stages to run, in pipeline order (e.g. `[reward, ppo]`); the others must already have their
    outputs in the run directory, or be replaced by an outside input (`sft_model`, `reward_model`,
    `feedback.source: file`). A finished stage whose config and inputs did not change is skipped."""
    rerun: list[str] = field(default_factory=list)
    """Stages to run again even though their outputs are there (the stages after them follow)."""
    gold: str | None = None
    """The task's gold scoring function `module:function(prompts, completions) -> list[float]`, when
    it has one: simulated labelers judge by it, PPO logs it (`ppo/reward/gold`, weight 0) and the
    evaluation reports the gold score and gold win rate."""
    sft_model: str | None = None
    """An existing SFT model (directory or hub id) to use instead of running the `sft` stage."""
    reward_model: str | None = None
    """An existing reward model to use instead of `generate`, `feedback` and `reward`."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """The prompt layout, the same for every stage (copied into each stage's `prompt`)."""
    engine: EngineName | None = None
    """The generation engine of every stage that samples (`generate`, PPO's rollouts, rejection
    sampling, `eval` with best-of-N): `hf`, `vllm` or `auto`, copied into each stage. None: each
    stage's own setting."""
    vllm: VllmConfig | None = None
    """The vLLM engine's settings for every stage that samples (with `engine`); None: each stage's own."""
    sft: SftConfig = field(default_factory=lambda: SftConfig(logging=LoggingConfig(log_every=10)))
    """Supervised fine-tuning: `model.path` is the base model, `data.path` the demonstrations."""
    generate: GenerateConfig = field(default_factory=_generate_defaults)
    """Candidates for feedback: `data.path` holds the prompts; `samples_per_prompt` per prompt."""
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    """Where the preferences come from."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward-model training on the feedback (starts from the SFT model unless `reward_base`)."""
    reward_base: str | None = None
    """Start the reward model from this model instead of the SFT model (it may have its own
    tokenizer: PPO re-encodes the policy's text for it)."""
    methods: list[str] = field(default_factory=lambda: ["ppo"])
    """The last stage: any of ppo, dpo, rrhf, best_of_n, rejection_sampling, each from the same
    SFT model and the same feedback. The evaluation puts them side by side (`eval/comparison.json`,
    the report); the first is the headline policy, evaluated against SFT in `eval/`."""
    ppo: PpoConfig = field(default_factory=PpoConfig)
    """PPO (or REINFORCE/RLOO/GRPO) from the SFT model against the reward model: `data.path` holds
    the prompts. Extra `reward.sources` (rule functions) are kept and added to the reward model's."""
    dpo: DpoConfig = field(default_factory=DpoConfig)
    """DPO from the SFT model on the feedback's training pairs (held-out pairs for its evaluation);
    no reward model. `data.path` is needed only when the feedback stage is replaced (`reward_model`)."""
    rrhf: RrhfConfig = field(default_factory=RrhfConfig)
    """RRHF from the SFT model on the generated candidates, scored by the reward model (plus
    `samples_per_prompt` of its own). `data.path` is needed only when `generate` does not run."""
    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig)
    """Best-of-N: the SFT policy answers with the best of `n` samples by the reward model."""
    rejection_sampling: RejectionSamplingConfig = field(default_factory=RejectionSamplingConfig)
    """Rejection-sampling fine-tuning: the SFT model fine-tuned on its own best-of-n answers."""
    eval: EvalPolicyConfig = field(default_factory=EvalPolicyConfig)
    """The policies against the SFT policy on held-out prompts (`data.path`)."""
    tax: AlignmentTaxConfig = field(default_factory=AlignmentTaxConfig)
    """The alignment tax, measured in the eval stage on SFT and every policy: the held-out loss on
    `tax.texts` and the scores of `tax.tasks` (lm-evaluation-harness), set against each method's
    gain in `eval/tax.json`, the report's "What alignment cost" and the summary table."""
    reward_ensemble: int = 1
    """Reward models the reward stage trains: its own and `reward_ensemble - 1` more, each from its
    own seed on a bootstrap resample of the training pairs (`reward/ensemble_<k>/model`). With
    `rounds`, the next round's `feedback.select: disagreement` reads their spread."""
    rounds: int = 1
    """Rounds of the loop (online RLHF): round r samples candidates from the current policy on
    prompts not used before (the `generate.data` prompts, split into `rounds` parts), collects
    feedback on them, retrains the reward model on all feedback so far (warm-started from the
    previous round's) and runs PPO from the current policy, leashed to the SFT model. Each round
    in `<output_dir>/round_<r>`; `feedback.budget` is per round."""
    start_policy: str | None = None
    """The policy that samples the candidates and that PPO starts from; None: the SFT model.
    `rounds` sets it to the previous round's policy (PPO's reference stays the SFT model)."""
    earlier_feedback: str | None = None
    """A feedback directory of an earlier round whose pairs are added to this run's (the reward
    model trains on all of them); `rounds` sets it."""
    eval_reward_data: DataConfig = field(default_factory=DataConfig)
    """Held-out feedback for the reward model's accuracy and calibration; default: the feedback
    stage's held-out pairs (judged by `gold` when there is one, else by the labelers)."""

    def __post_init__(self) -> None:
        for key in ("stages", "rerun"):
            unknown = [s for s in getattr(self, key) if s not in STAGES]
            if unknown:
                raise ConfigError(f"`{key}`: unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
        self._check_rounds()
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            what = f"unknown method {unknown[0]!r}" if unknown else "give each method once, at least one"
            raise ConfigError(f"`methods`: {what}; methods are {', '.join(METHODS)}")

    def _check_rounds(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"`rounds` must be at least 1, got {self.rounds}")
        if self.reward_ensemble < 1:
            raise ConfigError(f"`reward_ensemble` must be at least 1, got {self.reward_ensemble}")
        available = len(self.feedback.select_with) + (self.reward_ensemble if self.rounds > 1 else 0)
        if available < self.feedback.models_needed():
            raise ConfigError(
                f"`feedback.select: {self.feedback.select}` needs {self.feedback.models_needed()} or more "
                "reward models: give them in `feedback.select_with`, or with `rounds` let each round read the "
                "previous round's (`reward_ensemble: 3` trains three)"
            )
        if self.rounds == 1:
            return
        if self.methods != ["ppo"]:
            raise ConfigError(
                "`rounds` runs PPO in every round (`methods: [ppo]`); compare other methods in a single round"
            )
        database = self.feedback.database
        if self.feedback.source == "people" and database and "{round}" not in database:
            raise ConfigError(
                "`feedback.database`: one labeling project per PostgreSQL database, so with `rounds` write "
                "`{round}` in the database's name (e.g. postgresql://me@db/rlhf_round_{round})"
            )
        if self.reward_model or self.feedback.source == "file":
            raise ConfigError(
                "`rounds` collects new feedback every round: it takes neither `reward_model` nor "
                "`feedback.source: file`"
            )
