"""One step's experience: the sampled rollout scored by every model and turned into advantages.

    make_experience(run, rollout, scores, beta) -> Experience (every field set, shapes below)
        one pass of the policy: old log-probs and, with a shared critic, values together
        one pass of the reference; (one of a separate critic)
        per-token KL to the reference, then advantages: GAE with the critic, or REINFORCE / RLOO / GRPO

Distributed runs: every quantity that is a mean over the rollout (whitening statistics, the
REINFORCE baseline, the KL metric) is taken over all processes, so N processes with rollouts of
R/N sequences compute what one process with R would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.data.records import Prompt
from rlhf.losses import ppo as ppo_losses
from rlhf.ppo.config import PpoConfig
from rlhf.ppo.rollout import Rollout, collate
from rlhf.ppo.run_state import PpoRun


@dataclass
class Experience:
    """What the update learns from: R = prompts x completions sequences (prompt-major), N the
    longest response. Every field is set; `values` and `returns` are None only without a critic
    (the critic-free estimators)."""

    prompts: list[Prompt]
    """(R,) the prompt of each sequence, as in the data (for the logs)."""
    query: list[list[int]]
    """(R,) prompt token ids (policy tokenizer, rendered)."""
    response: list[list[int]]
    """(R,) response token ids (through EOS when the completion ended with one)."""
    texts: list[str]
    """(R,) decoded completions (cut before a stop string)."""
    finished: list[bool]
    """(R,) whether the completion ended (EOS or stop string) rather than hit `max_new_tokens`."""
    scores: torch.Tensor
    """(R,) float32 the shaped reward r(x, y) of each completion."""
    mask: torch.Tensor
    """(R, N) float32, 1 on response tokens."""
    logprobs: torch.Tensor
    """(R, N) float32 log π_old(a_t | s_t) under the policy that sampled (0 off the mask)."""
    ref_logprobs: torch.Tensor
    """(R, N) float32 log π_ref(a_t | s_t) under the reference model (0 off the mask)."""
    kl: torch.Tensor
    """(R, N) float32 per-token KL penalty estimate to the reference (`kl.estimator`; 0 off the mask)."""
    advantages: torch.Tensor
    """(R, N) float32 advantage of each token (whitened when `advantage.whiten`)."""
    values: torch.Tensor | None
    """(R, N) float32 V(s_t) of the critic that scored the rollout; None without a critic."""
    returns: torch.Tensor | None
    """(R, N) float32 GAE value targets; None without a critic."""
    engine_logprobs: torch.Tensor | None
    """(R, N) float32 log-probs of the response tokens under the engine that sampled them (0 off
    the mask); None when the engine reports none (the built-in engine samples from the policy itself)."""

    def __len__(self) -> int:
        return len(self.response)


@dataclass
class Passes:
    """The scoring passes' read-outs, each (R, N) float32 and 0 off the mask."""

    mask: torch.Tensor
    """(R, N) 1 on response tokens."""
    logprobs: torch.Tensor
    """(R, N) log-probs under the policy."""
    ref_logprobs: torch.Tensor
    """(R, N) log-probs under the reference."""
    values: torch.Tensor | None
    """(R, N) the critic's values; None without a critic."""


def make_experience(
    run: PpoRun, rollout: Rollout, scores: torch.Tensor, beta: float
) -> tuple[Experience, float]:
    """The complete experience of `rollout` with rewards `scores` (R,), and the step's mean KL to the
    reference per sequence (k1 summed over each completion, averaged over all processes)."""
    passes = score_passes(
        rollout, policy=run.policy, reference=run.reference, critic=run.critic,
        batch_size=run.cfg.rollout.forward_batch_size, pad_id=run.models.pad_id, device=run.accelerator.device,
    )  # fmt: skip
    kl = ppo_losses.kl_per_token(passes.logprobs, passes.ref_logprobs, run.cfg.kl_estimator) * passes.mask
    advantages, returns = _advantages(run, scores, kl, passes, beta)
    experience = Experience(
        prompts=rollout.prompts, query=rollout.query, response=rollout.response, texts=rollout.texts,
        finished=rollout.finished, scores=scores, mask=passes.mask, logprobs=passes.logprobs,
        ref_logprobs=passes.ref_logprobs, kl=kl, advantages=advantages, values=passes.values, returns=returns,
        engine_logprobs=_engine_logprobs(rollout, passes.mask),
    )  # fmt: skip
    seq_kl = ((passes.logprobs - passes.ref_logprobs) * passes.mask).sum(1)  # (R,) k1: the measured KL
    totals = run.reduce_sum(torch.stack([seq_kl.sum(), torch.tensor(float(len(rollout)))]).double())
    return experience, float(totals[0] / totals[1])


def _engine_logprobs(rollout: Rollout, mask: torch.Tensor) -> torch.Tensor | None:
    """(R, N) the engine's log-probs laid out as the mask, or None when the engine gave none."""
    if rollout.engine_logprobs is None:
        return None
    out = torch.zeros_like(mask)
    for i, values in enumerate(rollout.engine_logprobs):
        out[i, : len(values)] = torch.tensor(values, dtype=torch.float32)
    return out * mask


def engine_mismatch_row(run: PpoRun, exp: Experience) -> dict[str, float]:
    """The step's engine-vs-trainer log-prob mismatch on the sampled tokens, over all processes:
    `engine_kl` (mean per token of log π_engine − log π_trainer, the k1 estimate of
    KL(π_engine ‖ π_trainer)), `engine_logprob_abs_diff` (mean |difference|) and
    `engine_logprob_max_diff` (largest |difference| on this process's tokens). Empty without
    engine log-probs."""
    if exp.engine_logprobs is None:
        return {}
    m = ppo_losses.engine_mismatch(exp.logprobs, exp.engine_logprobs, exp.mask)
    sums = run.reduce_sum(torch.stack([m["kl"], m["abs_diff"], m["tokens"]]).double())
    tokens = max(float(sums[2]), 1.0)
    return {
        "engine_kl": float(sums[0]) / tokens,
        "engine_logprob_abs_diff": float(sums[1]) / tokens,
        "engine_logprob_max_diff": float(m["max_diff"]),
    }


def _advantages(
    run: PpoRun, scores: torch.Tensor, kl: torch.Tensor, passes: Passes, beta: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(advantages (R, N), returns (R, N) or None) by the configured estimator."""
    cfg: PpoConfig = run.cfg
    mask = passes.mask
    in_reward = cfg.kl_placement == "reward"
    estimator = cfg.advantage.estimator
    returns = None
    if estimator == "gae":
        assert passes.values is not None, "GAE runs with a critic"
        rewards = ppo_losses.token_rewards(scores, kl if in_reward else torch.zeros_like(kl), mask, beta)
        advantages, returns = ppo_losses.gae(
            rewards, passes.values, mask, cfg.advantage.gamma, cfg.advantage.lam
        )
    else:
        seq = scores - beta * kl.sum(1) if in_reward else scores  # (R,)
        if estimator == "reinforce":
            # The baseline is a mean over the whole step's rollout, identical on every process.
            everything = run.gather(seq)  # (R x processes,) in rank order
            rank = run.accelerator.process_index
            seq_adv = run.state.baseline.advantages(everything)[rank * len(seq) : (rank + 1) * len(seq)]
        elif estimator == "rloo":
            seq_adv = ppo_losses.rloo_advantages(seq, cfg.rollout.samples_per_prompt)
        else:
            seq_adv = ppo_losses.grpo_advantages(
                seq, cfg.rollout.samples_per_prompt, scale=cfg.advantage.grpo_scale
            )
        advantages = ppo_losses.broadcast_to_tokens(seq_adv, mask)
    if cfg.advantage.whiten:
        advantages = ppo_losses.masked_whiten(advantages, mask, reduce_sum=run.reduce_sum)
    return advantages, returns


@torch.no_grad()
def score_passes(
    rollout: Rollout, *, policy, reference, critic, batch_size: int, pad_id: int, device
) -> Passes:
    """The log-probs of every response token under the policy and the reference, and the values.

    `policy` is the `PolicyValue` (its shared value head gives the values in the same pass);
    `reference(input_ids, attention_mask, response)` returns the reference's `PolicyOutput` (the
    policy with its adapter off, or a frozen copy); `critic` a separate `ScalarModel` or None.
    Sequences go through in length order, `batch_size` at a time, so a batch pads only to its own
    longest."""
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
        mask = batch["mask"].cpu()  # (b, width)
        out["mask"][rows, :width] = mask
        out["logprobs"][rows, :width] = main.logprobs.cpu() * mask
        out["ref"][rows, :width] = ref.logprobs.cpu() * mask
        if critic is not None:
            values = critic_values(critic, batch["input_ids"], batch["attention_mask"], width)
            out["values"][rows, :width] = values.float().cpu() * mask
        elif main.values is not None:
            out["values"][rows, :width] = main.values.cpu() * mask
    policy.train(was_training)
    has_values = critic is not None or getattr(policy, "value_head", None) is not None
    return Passes(out["mask"], out["logprobs"], out["ref"], out["values"] if has_values else None)
