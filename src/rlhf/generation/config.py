"""How each completion is decoded (`SamplingConfig`), shared by every stage that samples: `rlhf
generate`, PPO rollouts, rrhf, best-of-N, evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rlhf.config.core import ConfigError


@dataclass
class SamplingConfig:
    """How each completion is decoded. How many are drawn per prompt is the drawing command's own
    setting (`samples_per_prompt` of generate and rrhf, `rollout.samples_per_prompt` of ppo)."""

    RENAMED: ClassVar[dict[str, str]] = {
        "num_samples": "../samples_per_prompt",
        "unique": "../unique",
        "max_retries": "../max_retries",
    }

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
    seed: int | None = 0
    """Seeds torch's random generator once before sampling. The same seed, model, prompts, settings,
    `batch_size` and device give the same completions. null: do not seed (continue the process's
    random stream, as a training loop that samples every step does: PPO requires null)."""
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
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`sampling.{name}` must be at least 1, got {getattr(self, name)}")
        if self.stop is not None and any(not text for text in self.stop):
            raise ConfigError("`sampling.stop` must not contain an empty string (it would stop at once)")

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy (temperature 0): no randomness at all."""
        return self.temperature == 0


def check_draws(sampling: SamplingConfig, per_prompt: int, unique: bool, max_retries: int) -> None:
    """The drawing settings a command holds next to its `sampling` (`samples_per_prompt`,
    `unique`, `max_retries`) are usable with it."""
    if per_prompt < 1:
        raise ConfigError(f"`samples_per_prompt` must be at least 1, got {per_prompt}")
    if max_retries < 0:
        raise ConfigError(f"`max_retries` must be 0 or more, got {max_retries}")
    if sampling.greedy and per_prompt > 1 and unique:
        raise ConfigError(
            f"`sampling.temperature` 0 is greedy decoding, which cannot give {per_prompt} distinct "
            "samples of a prompt; set a temperature above 0, or `unique: false` for repeats"
        )
