"""Rollouts: K completions of each prompt from a generation engine, and the batch layout every
pass over them uses (`collate`). `rlhf.ppo.experience` scores them into the update's `Experience`.

    generator.sync(policy); generator.generate(prompt_ids) -> samples

The generator is a seam (`rlhf.engines.Generator`): the built-in engine calls transformers'
`generate` on the policy itself, the vLLM engine loads the policy's weights at every `sync`, and
anything else with `sync(policy)` and `generate(prompt_ids) -> list[Sample]` can replace them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.data.records import Prompt
from rlhf.engines import Generator
from rlhf.engines.hf import HFGenerator

__all__ = ["Generator", "HFGenerator", "Rollout", "collate", "sample_rollout"]


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
    engine_logprobs: list[list[float]] | None
    """(R,) the engine's log-probability of each response token (as `response`), when the engine
    reports them (vLLM); None from the built-in engine."""

    def __len__(self) -> int:
        return len(self.response)


def sample_rollout(
    generator: Generator, prompts: list[Prompt], prompt_ids: list[list[int]], k: int, eos_id: int
) -> Rollout:
    """K completions of each prompt (the K copies of a prompt next to each other)."""
    query = [ids for ids in prompt_ids for _ in range(k)]
    samples = generator.generate(query)
    response = [s.token_ids or [eos_id] for s in samples]  # an empty completion still takes one action
    engine_logprobs = None
    if all(s.logprobs is not None for s in samples):
        # An empty completion's stand-in EOS was not sampled by the engine: log-prob 0 (weight 1).
        engine_logprobs = [list(s.logprobs) if s.token_ids else [0.0] for s in samples]  # type: ignore[arg-type]
    return Rollout(
        prompts=[p for p in prompts for _ in range(k)], query=query, response=response,
        texts=[s.text for s in samples], finished=[s.finish != "length" for s in samples],
        engine_logprobs=engine_logprobs,
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
