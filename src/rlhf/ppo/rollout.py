"""Rollouts: sample completions, then score every token in as few passes as possible.

    generator.generate(prompt_ids) -> samples           (KV-cached, batched `generate`)
    score_rollout(...)                                  one pass of the policy: old log-probs and,
                                                        with a shared critic, values together;
                                                        one pass of the reference; (one of a
                                                        separate critic)

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
    """One step's sequences (R = prompts x completions, prompt-major) and everything computed on them."""

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
    mask: torch.Tensor | None = None
    """(R, N) 1 on response tokens; N is the longest response."""
    logprobs: torch.Tensor | None = None
    """(R, N) log-probs under the policy that sampled (π_old)."""
    ref_logprobs: torch.Tensor | None = None
    """(R, N) log-probs under the reference model."""
    values: torch.Tensor | None = None
    """(R, N) the critic's values (GAE only)."""
    scores: torch.Tensor | None = None
    """(R,) the shaped reward r(x, y) of each completion."""
    advantages: torch.Tensor | None = None
    """(R, N) advantage of each token."""
    returns: torch.Tensor | None = None
    """(R, N) value targets (GAE only)."""

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


@torch.no_grad()
def score_rollout(
    rollout: Rollout,
    *,
    policy,
    reference,
    critic,
    batch_size: int,
    pad_id: int,
    device,
) -> None:
    """Fill `mask`, `logprobs`, `ref_logprobs` and (with a critic) `values` of `rollout`.

    `policy` is the `PolicyValue` (its shared value head gives the values in the same pass);
    `reference(input_ids, attention_mask, response)` returns the reference's `PolicyOutput` (the
    policy with its adapter off, or a frozen copy); `critic` a separate `ScalarModel` or None. Sequences go through in
    length order, `batch_size` at a time, so a batch pads only to its own longest."""
    from rlhf.ppo.policy import critic_values

    r, n = len(rollout), max(len(x) for x in rollout.response)
    out = {name: torch.zeros((r, n), dtype=torch.float32) for name in ("mask", "logprobs", "ref", "values")}
    order = sorted(range(r), key=lambda i: len(rollout.query[i]) + len(rollout.response[i]))
    was_training = policy.training
    policy.eval()
    for start in range(0, r, batch_size):
        idx = order[start : start + batch_size]
        batch = collate([rollout.query[i] for i in idx], [rollout.response[i] for i in idx], pad_id, device)
        width = batch["response"].shape[1]
        inputs = (batch["input_ids"], batch["attention_mask"], batch["response"])
        main = policy(*inputs)
        ref = reference(*inputs)
        rows = torch.tensor(idx)
        out["mask"][rows, :width] = batch["mask"].cpu()
        out["logprobs"][rows, :width] = main.logprobs.cpu() * batch["mask"].cpu()
        out["ref"][rows, :width] = ref.logprobs.cpu() * batch["mask"].cpu()
        if critic is not None:
            values = critic_values(critic, batch["input_ids"], batch["attention_mask"], width)
            out["values"][rows, :width] = values.float().cpu() * batch["mask"].cpu()
        elif main.values is not None:
            out["values"][rows, :width] = main.values.cpu() * batch["mask"].cpu()
    policy.train(was_training)
    rollout.mask, rollout.logprobs, rollout.ref_logprobs = out["mask"], out["logprobs"], out["ref"]
    has_values = critic is not None or getattr(policy, "value_head", None) is not None
    rollout.values = out["values"] if has_values else None
