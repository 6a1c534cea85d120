"""What a reward is made of: reward models, Python functions and HTTP endpoints, weighted and normalized.

Used by every stage that scores text with a reward: `rlhf ppo`, `rlhf generate --best-of`, `rlhf eval
policy`, `rlhf rrhf` and the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rlhf.config.core import ConfigError
from rlhf.judge.config import JudgeConfig


@dataclass
class RewardSourceConfig:
    model: str | None = None
    """A reward model directory (from `rlhf reward`), or any sequence-classification checkpoint
    (a hub id or a directory: a reward model such as OpenAssistant's DeBERTa ones, a sentiment or
    toxicity classifier). It keeps its own tokenizer: the policy's text is re-encoded for it."""
    label: str | None = None
    """`model` is a classifier: the label whose output is the reward, by name (from the model's
    config, e.g. `nothate`) or index. Needed when it has several labels."""
    output: Literal["logit", "probability", "log_probability"] = "logit"
    """`model` is a classifier: the reward is its label's logit, its probability (softmax over the
    labels; sigmoid for one label) or that probability's log."""
    input: Literal["auto", "completion", "prompt_and_completion"] = "auto"
    """What a classifier reads: the completion alone, or the prompt and the completion (as a text
    pair). `auto`: a reward model trained by `rlhf reward` reads both in the layout it was trained
    with; another one-label model reads both; a classifier of several labels reads the completion."""
    function: str | None = None
    """A Python callable `module:function(prompts, completions) -> list[float]` (the module is
    imported from the working directory or the Python path; `path/to/file.py:function` also works).
    It may instead return a dict with `rewards` plus other lists of per-completion numbers (e.g. a
    gold score), which are logged as `reward/<name>`."""
    judge: JudgeConfig | None = None
    """An LLM judge (`rlhf.judge`: `url`, `model_name`, ...) comparing the samples of each prompt
    with each other (both orders): a sample's reward is its mean chance of beating the prompt's
    other samples, in [0, 1] (`rlhf.rewards.judge`). Needs 2 or more samples per prompt."""
    judge_mode: Literal["pairs", "rank"] = "pairs"
    """`judge`: `pairs` asks about every two samples of a prompt (a sample's reward is its mean
    chance of beating the others; with 2 samples per prompt, its chance against the policy's own
    other sample); `rank` asks the judge to order all K samples at once (`judge.ranking_template`,
    as given and reversed) and rewards by place, 1 for the best to 0 for the worst (a group the
    judge could not or did not consistently rank gets ½ for every sample, counted)."""
    url: str | None = None
    """An HTTP endpoint: POST `{"prompts": [...], "completions": [...]}` as JSON, answered with
    `{"rewards": [...]}` (plus optional per-completion metrics, as for `function`)."""
    weight: float = 1.0
    """This source's weight in the sum of all sources."""
    name: str | None = None
    """Name in the logs (`reward/<name>`); default: derived from the source."""
    normalize: Literal["auto", "none", "saved", "running"] = "auto"
    """`saved`: (r - mean) / std with the statistics stored with the reward model by `rlhf reward`;
    `running`: with running statistics of this run's rewards (synchronised across processes);
    `auto`: `saved` for a reward model that has them, else `none`."""
    batch_size: int = 16
    """Completions per reward-model forward pass (`model`) or per request (`url`)."""
    timeout_s: float = 60.0
    """`url`: seconds to wait for one response before retrying."""
    retries: int = 2
    """`url`: attempts after the first before the run stops with the error."""

    def __post_init__(self) -> None:
        given = [name for name in ("model", "function", "url", "judge") if getattr(self, name)]
        if len(given) != 1:
            raise ConfigError(
                f"a reward source needs exactly one of `model`, `function`, `url`, `judge`; got {given or 'none'}"
            )
        if self.batch_size < 1 or self.retries < 0 or self.timeout_s <= 0:
            raise ConfigError("reward source: `batch_size` >= 1, `retries` >= 0, `timeout_s` > 0")
        if self.judge_mode != "pairs" and not self.judge:
            raise ConfigError("reward source: `judge_mode` is for a `judge` source")
        if not self.model and (self.label is not None or self.output != "logit" or self.input != "auto"):
            raise ConfigError("reward source: `label`, `output` and `input` read a classifier: give `model`")

    @property
    def reads_classifier(self) -> bool:
        """Whether `label`, `output` or `input` ask for a classifier's own reading."""
        return self.label is not None or self.output != "logit" or self.input != "auto"


@dataclass
class RewardSourcesConfig:
    """Where a reward comes from, the same shape wherever one is used (`reward` of ppo, rrhf,
    generate, eval policy, score, eval reward): a reward model, a Python function, an HTTP endpoint,
    or a weighted sum of several."""

    USUAL_KEY: ClassVar[str] = "model"
    """What a bare value given for the whole section most likely meant (said in the error)."""

    model: str | None = None
    """Shortcut for one reward-model or classifier source (see `sources`)."""
    label: str | None = None
    """With `model`: the classifier's label whose output is the reward (see a source's `label`)."""
    output: Literal["logit", "probability", "log_probability"] = "logit"
    """With `model`: the label's logit, probability or log-probability (see a source's `output`)."""
    input: Literal["auto", "completion", "prompt_and_completion"] = "auto"
    """With `model`: what a classifier reads (see a source's `input`)."""
    function: str | None = None
    """Shortcut for one Python-function source `module:function`."""
    url: str | None = None
    """Shortcut for one HTTP source."""
    judge: JudgeConfig | None = None
    """Shortcut for one LLM-judge source (see a source's `judge`)."""
    judge_mode: Literal["pairs", "rank"] = "pairs"
    """With `judge`: how each prompt's samples are judged (see a source's `judge_mode`)."""
    sources: list[RewardSourceConfig] = field(default_factory=list)
    """Several sources, summed with their weights (each with its own normalization); the
    shortcuts above add one source of weight 1 to this list."""
    clip: float | None = None
    """Clip the (normalized, summed) reward of a completion to [-clip, clip] (null: off): a few
    extreme scores cannot dominate a step."""
    no_eos_penalty: float | None = None
    """Subtract this from the reward of a completion that hit `max_new_tokens` without ending (no
    EOS or stop string): discourages rambling that the reward model might not punish."""
    batch_size: int = 16
    """Completions per forward pass (reward models) or request (endpoints) of the `model`, `function`
    and `url` shortcuts (a source of `sources` sets its own)."""
    device: str | None = None
    """Device of the reward models; default: the process's device."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Reward models' weight dtype."""

    def describe(self) -> str | None:
        """The sources as a short text (their model paths, functions or URLs, with `+` between,
        weights other than 1 shown); None when there is none."""
        parts = []
        for source in self.all_sources():
            where = (
                source.model or source.function or source.url or (source.judge.label if source.judge else "?")
            )
            parts.append(where if source.weight == 1.0 else f"{source.weight:g} x {where}")
        return " + ".join(parts) or None

    def single_model(self) -> str | None:
        """The reward model directory when the sources are one reward model, read as a reward
        model (no classifier label or output), and nothing else."""
        sources = self.all_sources()
        if len(sources) == 1 and sources[0].weight == 1.0 and not sources[0].reads_classifier:
            return sources[0].model
        return None

    def all_sources(self) -> list[RewardSourceConfig]:
        shortcuts = []
        if self.model:
            shortcuts.append(
                RewardSourceConfig(
                    model=self.model,
                    label=self.label,
                    output=self.output,
                    input=self.input,
                    batch_size=self.batch_size,
                )  # fmt: skip
            )
        if self.function:
            shortcuts.append(RewardSourceConfig(function=self.function, batch_size=self.batch_size))
        if self.url:
            shortcuts.append(RewardSourceConfig(url=self.url, batch_size=self.batch_size))
        if self.judge:
            shortcuts.append(RewardSourceConfig(judge=self.judge, judge_mode=self.judge_mode))
        return shortcuts + list(self.sources)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"`reward.batch_size` must be at least 1, got {self.batch_size}")
        if self.judge_mode != "pairs" and not self.judge:
            raise ConfigError("`reward.judge_mode` is for `reward.judge`")
        if not self.model and (self.label is not None or self.output != "logit" or self.input != "auto"):
            raise ConfigError(
                "`reward.label`, `reward.output` and `reward.input` read a classifier: set `reward.model`"
            )
        if self.clip is not None and self.clip <= 0:
            raise ConfigError(f"`reward.clip` must be positive (or null), got {self.clip}")
