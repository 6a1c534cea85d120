"""Configs of `rlhf generate`: how to sample (`SamplingConfig`, shared with later stages that
sample, e.g. PPO rollouts and best-of-N) and what to sample for (`GenerateConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.core import ConfigError
from rlhf.config.engine import EngineName, VllmConfig
from rlhf.config.parts import DataConfig, ModelConfig, PromptConfig

DEFAULT_OUTPUT = "runs/generate/completions.jsonl"


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding (always the most likely token)."""
    top_p: float = 1.0
    """Nucleus sampling: draw only from the smallest set of tokens whose probability reaches top_p
    (1.0: off)."""
    top_k: int = 0
    """Draw only from the k most likely tokens (0: off). The model's own generation_config
    sampling defaults are not used: these fields are the whole sampling setup."""
    repetition_penalty: float = 1.0
    """Divide the logits of tokens already in the sequence by this (CTRL-style; 1.0: off)."""
    max_new_tokens: int = 128
    """Most tokens generated per completion; a completion also ends at the model's EOS or a stop string."""
    stop: list[str] | None = None
    """Strings that end a completion: generation stops once one appears, and the completion is cut
    right before the first one (the stop string itself is not kept). In YAML write "\\n" for a newline."""
    num_samples: int = 1
    """Completions drawn per prompt (K): the candidates people compare and rank."""
    unique: bool = True
    """Re-draw a completion whose text equals an earlier one of the same prompt (up to
    `max_retries` more rounds); any still repeated then are kept and counted in the summary."""
    max_retries: int = 3
    """Rounds of re-drawing repeated completions (with `unique`); 0: never re-draw."""
    seed: int | None = 0
    """Seeds torch's random generator once before sampling. The same seed, model, prompts, settings,
    `batch_size` and device give the same completions. null: do not seed (continue the process's
    random stream, as a training loop that samples every step wants)."""
    batch_size: int = 8
    """Sequences (prompt copies, one per sample) per `model.generate` call: bounds memory. Changing
    it changes which random numbers each sequence gets, so it is part of what a seed reproduces."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"`sampling.temperature` must be 0 (greedy) or more, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"`sampling.top_p` must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"`sampling.top_k` must be 0 (off) or more, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ConfigError(
                f"`sampling.repetition_penalty` must be positive, got {self.repetition_penalty}"
            )
        for name in ("max_new_tokens", "num_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`sampling.{name}` must be at least 1, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise ConfigError(f"`sampling.max_retries` must be 0 or more, got {self.max_retries}")
        if self.stop is not None and any(not text for text in self.stop):
            raise ConfigError("`sampling.stop` must not contain an empty string (it would stop at once)")
        if self.greedy and self.num_samples > 1 and self.unique:
            raise ConfigError(
                f"`sampling.temperature` 0 is greedy decoding, which cannot give {self.num_samples} distinct "
                "samples of a prompt; set a temperature above 0, or `sampling.unique: false` for repeats"
            )

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy (temperature 0): no randomness at all."""
        return self.temperature == 0


@dataclass
class GenerateConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to sample from: a hub id, a directory (a saved SFT model or adapter) or `builtin:tiny`."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """How each prompt becomes the text the model sees (chat, instruction or raw; few-shot; system
    prompt). Use the same settings the model was fine-tuned with."""
    data: DataConfig = field(default_factory=DataConfig)
    """The prompts: a file of any format (`prompts`, or the prompt part of any other format). Prompts
    longer than `data.max_prompt_length` tokens lose their start; `data.limit` takes the first N."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How completions are drawn."""
    best_of: int = 1
    """Best-of-N (rejection sampling): draw N completions per prompt, score them with
    `reward_model` and keep the highest scored one. The output is then one `prompt_completion` row
    per prompt, which `rlhf sft` trains on as it is (rejection-sampling fine-tuning). The N draws
    are independent (`sampling.unique` does not apply) and `sampling.num_samples` must stay 1.
    1: off (plain sampling, `candidates` rows)."""
    reward_model: str | None = None
    """Reward model directory that scores the best-of-N draws (`rlhf reward` output or any
    one-label sequence classifier; it uses its own tokenizer). Needed when `best_of` is above 1."""
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
        if self.best_of == 1:
            if self.reward_model:
                raise ConfigError(
                    "`reward_model` is only used with `best_of` above 1; set `best_of` (--best-of N)"
                )
            return
        if not self.reward_model:
            raise ConfigError(
                f"`best_of` {self.best_of} needs `reward_model`: the reward model directory that "
                "scores the draws (--reward-model DIR)"
            )
        if self.sampling.num_samples != 1:
            raise ConfigError(
                f"`sampling.num_samples` must be 1 with `best_of` {self.best_of}: best-of-N draws "
                f"`best_of` completions per prompt itself and keeps one (got num_samples "
                f"{self.sampling.num_samples})"
            )
        if self.sampling.greedy:
            raise ConfigError(
                f"`best_of` {self.best_of} needs `sampling.temperature` above 0: greedy decoding draws "
                "the same completion every time"
            )
