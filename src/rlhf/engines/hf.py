"""The built-in engine: transformers' `generate` on the model itself (KV cache, batched)."""

from __future__ import annotations

from typing import Any

import torch

from rlhf.generation.config import SamplingConfig
from rlhf.generation.sampling import Sample, sample_sequences


class HFGenerator:
    """`model.generate` with the KV cache, `sampling.batch_size` sequences at a time, on the live
    weights (`sync` only points at the model: nothing is copied)."""

    name = "hf"

    def __init__(self, tokenizer: Any, sampling: SamplingConfig, *, progress: bool = False) -> None:
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.progress = progress
        self.model: torch.nn.Module | None = None

    def sync(self, policy: torch.nn.Module) -> None:
        self.model = policy

    def generate(self, prompt_ids: list[list[int]], desc: str = "generate") -> list[Sample]:
        assert self.model is not None, "call sync(model) first"
        was_training = self.model.training
        self.model.eval()  # dropout off, and gradient checkpointing would switch the KV cache off
        try:
            return sample_sequences(
                self.model, self.tokenizer, prompt_ids, self.sampling, progress=self.progress, desc=desc
            )
        finally:
            self.model.train(was_training)

    def close(self) -> None:
        self.model = None
