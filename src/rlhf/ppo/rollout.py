"""Rollouts: K completions of each prompt from a generation engine, and the batch layout every
pass over them uses (`collate`). `rlhf.ppo.experience` scores them into the update's `Experience`.

    generator.generate(prompt_ids) -> samples           (KV-cached, batched `generate`)

The generator is a seam: anything with `generate(prompt_ids) -> list[Sample]` and
`sync(policy)` (called before each rollout, e.g. to load the new weights into a vLLM engine)
can replace the built-in one, which calls transformers' `generate` on the policy itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rlhf.data.records import Prompt
from rlhf.generation.config import SamplingConfig
from rlhf.generation.sampling import Sample


class Generator(Protocol):
    """What a rollout needs from a generation engine."""

    def sync(self, policy: torch.nn.Module) -> None:
        """Make the engine sample from `policy`'s current weights."""

    def generate(self, prompt_ids: list[list[int]]) -> list[Sample]:
        """One sample per entry (entries repeat for several completions of a prompt), in order."""


class HFGenerator:
    """The built-in engine: `model.generate` with the KV cache, `sampling.batch_size` sequences at a time."""

    def __init__(self, tokenizer: Any, sampling: SamplingConfig) -> None:
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.model: torch.nn.Module | None = None

    def sync(self, policy: torch.nn.Module) -> None:
        self.model = policy  # samples from the live weights: nothing to copy

    def generate(self, prompt_ids: list[list[int]]) -> list[Sample]:
        from rlhf.generation.sampling import sample_sequences

        assert self.model is not None, "call sync(policy) first"
        was_training = self.model.training
        self.model.eval()  # dropout off, and gradient checkpointing would switch the KV cache off
        try:
            return sample_sequences(self.model, self.tokenizer, prompt_ids, self.sampling, progress=False)
        finally:
            self.model.train(was_training)


@dataclass
class Rollout:
    """One step's sampled sequences (R = prompts x completions, prompt-major), complete when sampled."""

    prompts: list[Prompt]
    """(R,) the prompt of each sequence, as in the data (for the reward and the logs)."""
    query: list[list[int]]
    """(R,) prompt token ids (policy tokenizer, rendered)."""
    response: list[list[int]]
    """(R,) response token ids (through EOS when the completion ended with one)."""
    texts: list[str]
    """(R,) decoded completions (cut before a stop string)."""
    finished: list[bool]
    """(R,) whether the completion ended (EOS or stop string) rather than hit `max_new_tokens`."""

    def __len__(self) -> int:
        return len(self.response)


def sample_rollout(
    generator: Generator, prompts: list[Prompt], prompt_ids: list[list[int]], k: int, eos_id: int
) -> Rollout:
    """K completions of each prompt (the K copies of a prompt next to each other)."""
    query = [ids for ids in prompt_ids for _ in range(k)]
    samples = generator.generate(query)
    response = [s.token_ids or [eos_id] for s in samples]  # an empty completion still takes one action
    return Rollout(
        prompts=[p for p in prompts for _ in range(k)], query=query, response=response,
        texts=[s.text for s in samples], finished=[s.finish != "length" for s in samples],
    )  # fmt: skip


def collate(
    query: list[list[int]], response: list[list[int]], pad_id: int, device
) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask (B, P + N): prompts left padded to P, responses right padded to N;
    response (B, N) and mask (B, N). P and N are this batch's longest."""
    p = max(len(q) for q in query)
    n = max(len(r) for r in response)
    b = len(query)
    input_ids = torch.full((b, p + n), pad_id, dtype=torch.long)
    attention = torch.zeros((b, p + n), dtype=torch.long)
    for i, (q, r) in enumerate(zip(query, response)):
        input_ids[i, p - len(q) : p] = torch.tensor(q)
        input_ids[i, p : p + len(r)] = torch.tensor(r)
        attention[i, p - len(q) : p + len(r)] = 1
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention.to(device),
        "response": input_ids[:, p:].to(device),
        "mask": attention[:, p:].float().to(device),
    }
