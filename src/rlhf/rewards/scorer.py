"""Score text with a trained reward model, in its own tokenizer and prompt layout.

    scorer = RewardScorer.load("runs/reward/model")
    rewards = scorer.score(prompts, completions)       # list[float], one per completion
    scorer.normalize(rewards)                          # (r - mean) / std saved with the model

The scorer takes text, not token ids. A policy whose tokenizer or chat template differs from the
reward model's hands over its prompt (as in the data: text or messages) and its decoded
completion; the scorer renders the prompt with the layout the reward model was trained with
(saved in `rlhf_scalar.json`), encodes prompt and completion with the reward model's own
tokenizer, appends EOS as training did, and truncates the same way (prompt cut from the left).

Sequences are sorted by length before batching, so a batch pads only to its own longest member.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rlhf.config.core import from_dict
from rlhf.config.parts import ModelConfig, PromptConfig
from rlhf.data.records import Prompt

DEFAULT_MAX_LENGTH = 1024
"""Token limit for a reward model that did not record the one it was trained with."""


class RewardScorer:
    """A reward model ready to score (prompt, completion) text; see the module docstring."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        prompt: PromptConfig | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        max_prompt_length: int | None = None,
        batch_size: int = 16,
        device: str | torch.device | None = None,
    ) -> None:
        from rlhf.data.templates import PromptRenderer

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.renderer = PromptRenderer(prompt, tokenizer)
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.truncated = 0
        """Completions whose prompt or text had to be cut to fit `max_length`, since loading."""

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str = "auto",
        max_length: int | None = None,
        prompt: PromptConfig | None = None,
    ) -> RewardScorer:
        """A reward model directory (from `rlhf reward`, or any one-label sequence classifier).

        `max_length` and `prompt` default to what the model was trained with (`rlhf_scalar.json`);
        a model without that record gets `DEFAULT_MAX_LENGTH` and the default prompt layout.
        `device` defaults to the GPU when there is one.
        """
        from rlhf.models import load_tokenizer
        from rlhf.models.scalar import SCALAR_FILE, load_scalar_model
        from rlhf.training.sharding import whole_on_each_process

        saved_file = Path(path).expanduser() / SCALAR_FILE
        saved = json.loads(saved_file.read_text()) if saved_file.is_file() else {}
        # A QLoRA adapter was trained on a 4-bit base: load the base the same way to score the same.
        is_adapter = (Path(path).expanduser() / "adapter_config.json").is_file()
        quantization = saved.get("quantization", "none") if is_adapter else "none"
        model_cfg = from_dict(ModelConfig, {"path": str(path), "dtype": dtype, "quantization": quantization})
        tokenizer = load_tokenizer(model_cfg, padding_side="right")
        with whole_on_each_process():  # a frozen scorer runs outside any sharding engine
            model = load_scalar_model(model_cfg, for_training=False, tokenizer=tokenizer)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if quantization == "none":
            model.to(device)  # a quantized model was placed on its device while loading
        if prompt is None:
            prompt = from_dict(PromptConfig, saved["prompt"], prefix="prompt") if "prompt" in saved else None
        return cls(
            model, tokenizer, prompt=prompt, max_length=max_length or saved.get("max_length", DEFAULT_MAX_LENGTH),
            max_prompt_length=saved.get("max_prompt_length"), batch_size=batch_size, device=device,
        )  # fmt: skip

    @property
    def stats(self) -> tuple[float, float] | None:
        """(mean, std) of the model's rewards over its training completions, when it saved them."""
        extra = self.model.extra
        if extra.get("reward_mean") is None or extra.get("reward_std") is None:
            return None
        return float(extra["reward_mean"]), float(extra["reward_std"])

    def normalize(self, rewards: list[float]) -> list[float]:
        """(r - mean) / std with the statistics saved with the model (see `stats`)."""
        stats = self.stats
        if stats is None:
            raise ValueError(
                "this reward model has no saved reward statistics (reward_mean/reward_std in "
                "rlhf_scalar.json); train it with `rlhf reward` or use running normalization"
            )
        mean, std = stats
        return [(r - mean) / max(std, 1e-8) for r in rewards]

    def encode(self, prompt: Prompt, completion: str) -> list[int]:
        """Prompt (rendered with the model's layout) + completion + EOS, as the model's token ids."""
        from rlhf.data.tokenize import encode_example

        text = self.renderer.render(prompt)
        example = encode_example(self.tokenizer, text, completion, self.max_length, self.max_prompt_length)
        self.truncated += example.truncated
        return example.input_ids

    def score(self, prompts: list[Prompt], completions: list[str], *, progress: bool = False) -> list[float]:
        """The reward of each completion for the prompt at the same index."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return self.score_ids([self.encode(p, c) for p, c in zip(prompts, completions)], progress=progress)

    @torch.no_grad()
    def score_ids(self, sequences: list[list[int]], *, progress: bool = False) -> list[float]:
        """Rewards of already-encoded sequences (the model's tokenizer), in their order."""
        from rlhf.data.rows import pad_right
        from rlhf.tracking.progress import progress_bar

        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
        rewards = [0.0] * len(sequences)
        bar = progress_bar(len(sequences), "score", enabled=progress, unit="completion")
        with bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                ids, mask = pad_right([sequences[i] for i in chunk], self.tokenizer.pad_token_id)
                out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
                for i, value in zip(chunk, out.last.float().cpu().tolist()):
                    rewards[i] = value
                bar.update(len(chunk))
        return rewards


def scorer_metadata(prompt: PromptConfig, max_length: int, max_prompt_length: int | None) -> dict[str, Any]:
    """What `rlhf reward` saves in `rlhf_scalar.json` so a scorer lays text out as training did."""
    from rlhf.config.core import to_dict

    return {"prompt": to_dict(prompt), "max_length": max_length, "max_prompt_length": max_prompt_length}
