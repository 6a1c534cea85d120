"""Config of `rlhf eval policy`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rlhf.config.core import ConfigError
from rlhf.config.engine import EngineName, VllmConfig
from rlhf.config.parts import DataConfig, ModelConfig, PromptConfig
from rlhf.generation.config import SamplingConfig
from rlhf.judge.config import JudgeConfig
from rlhf.rewards.config import RewardSourceConfig, RewardSourcesConfig


@dataclass
class EvalPolicyConfig:
    """`rlhf eval policy`: a policy against a baseline on held-out prompts."""

    VALUE_MOVED: ClassVar[dict[str, str]] = {"judge": "headline"}
    """`judge: gold|reward|auto` (a score's name) is now `headline`; `judge` is an LLM judge."""

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
    judge: JudgeConfig | None = None
    """An LLM judge (`rlhf.judge`: an OpenAI-compatible endpoint, `url` and `model_name`) that
    compares the policy's answer with the baseline's on every prompt, both orders asked: its win
    rate of the policy with the 95% interval, its ties, inconsistent pairs and abstentions, beside
    the reward-model and gold numbers. None: no judge."""
    headline: Literal["auto", "gold", "reward", "judge"] = "auto"
    """Which score decides the headline win rate (all are reported when given); `auto`: gold when
    given, else the LLM judge, else the reward model."""
    tie_tolerance: float = 0.0
    """Score differences up to this count as ties (half a win)."""
    overoptimization_gap: float = 0.1
    """Say "over-optimization" when the policy's win rate by the reward model exceeds its win rate by
    gold (or else the LLM judge) by more than this (`rlhf.training.overoptimization`)."""
    references: str | None = None
    """A file of reference answers (any format with answers: prompt/completion rows, comparisons'
    chosen answers, rankings' best), matched to the held-out prompts by prompt text; every prompt
    must find one. None: the held-out rows' own (a completion, a chosen answer, a ranking's best,
    a correction, or a `reference` field), when they carry them. Scored by ROUGE-1/2/L and exact
    match (`rlhf.eval.references`)."""
    reference_field: str | None = None
    """The field of the held-out rows (or of `references`) that holds the reference answer, e.g.
    `summary` for DialogSum; a text or a list of texts (the best counts)."""
    metrics: list[RewardSourceConfig] = field(default_factory=list)
    """Extra per-answer metrics by any reward source, reported for both policies with the
    difference and its interval (not judges: no win rate): e.g. a toxicity classifier's label
    probability `{model: <classifier>, label: toxic, output: probability, name: toxicity}`. Named
    by `name`, else the label and output, else the model or function."""
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
        if self.headline == "gold" and not self.gold:
            raise ConfigError("`headline: gold` needs `gold: module:function`")
        if self.headline == "reward" and not self.reward.all_sources():
            raise ConfigError(
                "`headline: reward` needs `reward` (e.g. `reward.model: <reward model directory>`)"
            )
        if self.headline == "judge" and not (self.judge and self.judge.served):
            raise ConfigError(
                "`headline: judge` needs `judge` (its `url` and `model_name`, or a local `model`)"
            )
        if self.judge is not None and not self.judge.served:
            raise ConfigError(
                "`judge` needs `judge.url` (an OpenAI-compatible endpoint) and `judge.model_name`, or a "
                "local `judge.model`"
            )
        from rlhf.eval.references import REFERENCE_METRICS

        names = [metric_name(m) for m in self.metrics]
        if len(set(names)) < len(names) or set(names) & set(REFERENCE_METRICS):
            raise ConfigError(
                f"`metrics` need names of their own, not another's nor {', '.join(REFERENCE_METRICS)} "
                f"(got {', '.join(names)}): give each a `name`"
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


def metric_name(source: RewardSourceConfig) -> str:
    """What an `eval.metrics` entry is called in the tables: its `name`, else its label and
    output, else its model directory's or function's name."""
    from pathlib import PurePath

    if source.name:
        return source.name
    if source.label is not None:
        return f"{source.label} {source.output}"
    where = source.model or source.function or source.url or "metric"
    return PurePath(where).name or where


@dataclass
class EvalTasksConfig:
    """`rlhf eval tasks`: benchmark tasks through EleutherAI's lm-evaluation-harness (`lm-eval`),
    several models side by side."""

    models: list[str] = field(default_factory=list)
    """The models: model directories, adapter directories (loaded on their base, LoRA merged), run
    directories (their `policy/` or `model/`), or hub ids. The first is the one the others are
    compared with."""
    names: list[str] | None = None
    """A name per model for the table (e.g. `[base, sft, ppo]`); default: each directory's name
    (a run directory's own name)."""
    tasks: list[str] = field(default_factory=list)
    """Harness task or group names (its registry: hub datasets, for users with the hub), or local
    task files (`path/to/task.yaml`: the harness's task YAML over local data, e.g. `dataset_path:
    json` with `dataset_kwargs.data_files`; relative paths in it are read from the file's folder)."""
    texts: list[str] = field(default_factory=list)
    """Held-out text files to measure each model's language-modelling loss on (nats per token;
    demonstrations: their answers given their prompts, plain text: every token; `rlhf.eval.lm_loss`),
    as rows `held-out loss <file>` of the same table (lower is better)."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """`texts`: how their prompts are rendered (the settings the models were trained with)."""
    max_length: int = 512
    """`texts`: tokens per record (longer ones lose the start of their prompt, as in SFT)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Loading settings for every model (`dtype`, `trust_remote_code`, ...); `path` is ignored."""
    num_fewshot: int | None = None
    """Examples shown before each question; None: each task's own setting."""
    limit: int | None = None
    """Only the first N documents of each task (a quick look, not a benchmark number)."""
    batch_size: int = 8
    """Requests per forward pass."""
    device: str | None = None
    """`cpu`, `cuda`, ...; default: the GPU when there is one."""
    seed: int = 1234
    """The harness's seeds (few-shot sampling, Python, NumPy, torch)."""
    output_dir: str = "runs/eval-tasks"
    """Where `tasks.json` (the table as data) and, per model, the harness's `results.json` and
    `samples_<task>.jsonl` (every request's answer) go."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("`batch_size` must be at least 1")
        if self.names is not None and len(self.names) != len(self.models):
            raise ConfigError(f"`names` has {len(self.names)} names for {len(self.models)} models")
        if self.names is not None and len(set(self.names)) < len(self.names):
            raise ConfigError(f"`names` must differ from one another, got {', '.join(self.names)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"`limit` must be at least 1 (or null), got {self.limit}")


@dataclass
class AlignmentTaxConfig:
    """What the pipeline measures the alignment tax on (nothing by default)."""

    texts: list[str] = field(default_factory=list)
    """Held-out text files no stage trains on: demonstrations (the loss of their answers given their
    prompts) or plain text (every token), in any format SFT reads; e.g. held-out demonstrations of
    the task and plain documents of its domain."""
    tasks: list[str] = field(default_factory=list)
    """lm-evaluation-harness tasks (registry names, or local task files that run offline) run on
    the SFT model and every policy, as `rlhf eval tasks` runs them."""
    limit: int | None = None
    """Tasks: only the first N documents of each."""
    num_fewshot: int | None = None
    """Tasks: examples shown before each question; None: each task's own."""
    max_length: int = 512
    """Texts: tokens per record (longer ones lose the start of their prompt, as in SFT)."""
    batch_size: int = 16
    """Sequences (texts) or requests (tasks) per forward pass."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"`tax.batch_size` must be at least 1, got {self.batch_size}")

    @property
    def wanted(self) -> bool:
        return bool(self.texts or self.tasks)
