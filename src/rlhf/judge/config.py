"""Configuration of an LLM judge (one shape wherever a judge is used)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf.config.core import ConfigError
from rlhf.config.engine import EngineName, VllmConfig


@dataclass
class JudgeConfig:
    """A generative judge: behind an OpenAI-compatible chat-completions endpoint (`url`), or a local
    model run through the rollout engines (`model`)."""

    url: str | None = None
    """The endpoint's base URL, e.g. `http://127.0.0.1:8000/v1` (`vllm serve`) or
    `https://api.openai.com/v1`; requests go to `<url>/chat/completions`."""
    model_name: str | None = None
    """The model the endpoint serves (its `model` field)."""
    model: str | None = None
    """Instead of `url`: a local model (a path or hub id; decoder-only or encoder-decoder) that
    answers greedily through the rollout engine `engine`; the first answer token's top-5
    log-probabilities come from the model's own forward pass."""
    engine: EngineName = "auto"
    """`model`: the engine that writes the answers: `hf`, `vllm`, or `auto` (vLLM when it can run
    the model here, else `hf`, said in one line)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """`model`: the weights' dtype (`auto`: as saved)."""
    vllm: VllmConfig = field(default_factory=VllmConfig)
    """`model` with the `vllm` engine: how the engine is set up."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """The environment variable holding the API key (sent as a bearer token when set); the key
    itself never goes in a config file. None: no key."""
    template: str = "pairwise"
    """The prompt: `pairwise` (the built-in rubric: helpful, correct, harmless, concise) or a text
    file with `{prompt}`, `{answer_a}` and `{answer_b}` that asks for a one-letter verdict, `A` or `B`
    (or `tie`)."""
    ranking_template: str = "ranking"
    """The prompt for ranking K answers at once (a labeling project's `ranking` question, a reward
    source's `rank` mode): `ranking` (built in) or a text file with `{prompt}` and `{answers}` (the
    answers numbered from 1) that asks for the numbers best first, e.g. `2 > 3 > 1`."""
    both_orders: bool = True
    """Ask each pair in both orders (A/B and B/A): a pair judged differently by position is a tie
    (inconsistent, counted). False: one order, for judges known to be free of position bias."""
    concurrency: int = 8
    """Requests in flight at once."""
    cache: str | None = "runs/judge_cache.sqlite"
    """A SQLite file of every answer, keyed by (endpoint, model, template, request): asking again
    costs nothing. None: no cache."""
    max_tokens: int = 8
    """Tokens the judge may write (the verdict is its first word)."""
    temperature: float = 0.0
    """Sampling temperature of the judge (0: its most likely verdict)."""
    logprobs: bool = True
    """Ask for the verdict token's log-probabilities (`top_logprobs`), to give each verdict a
    probability; a server that returns none leaves the probability out."""
    timeout_s: float = 120.0
    """Seconds to wait for one answer."""
    retries: int = 3
    """Retries of a failed request (connection errors, timeouts, 5xx), with growing waits."""
    backoff_s: float = 1.0
    """Wait before the first retry (then 2x, 3x, ...)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.retries < 0 or self.max_tokens < 1:
            raise ConfigError("`judge.concurrency` and `judge.max_tokens` must be >= 1, `judge.retries` >= 0")
        if self.url is not None and not self.model_name:
            raise ConfigError("`judge.url` needs `judge.model_name` (the model the endpoint serves)")
        if self.url is not None and self.model is not None:
            raise ConfigError("set `judge.url` (an endpoint) or `judge.model` (a local model), not both")

    @property
    def served(self) -> bool:
        """Whether the judge has somewhere to ask: an endpoint or a local model."""
        return bool(self.url or self.model)

    @property
    def label(self) -> str:
        if self.model:
            return f"judge {self.model} (local, engine {self.engine})"
        return f"judge {self.model_name} at {self.url}"
