"""Reading a language model out at the tokens that matter: log π(a_t | s_t) and entropy, one implementation.

PPO (the rollout's old log-probs, the update, the reference pass), DPO and RRHF (sequence
log-probs) and `rlhf eval policy` (the KL it reports) all go through `token_logprobs`, so the KL
that PPO trains against and the KL that evaluation reports come from the same arithmetic, at the
same temperature. The LM head runs only at the positions that predict a token of interest: the
(B, T, V) logits of whole sequences are never formed. An encoder-decoder is read at its decoder's
positions, which all predict answer tokens (`rlhf.models.seq2seq`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def causal_parts(lm: Any) -> tuple[Any, Any]:
    """(backbone, output head) of a causal LM or a PeftModel around one (LoRA layers live inside
    the backbone's modules, so calling the backbone directly still uses them)."""
    from rlhf.models.adapters import find_peft_model

    peft_model = find_peft_model(lm)
    base = peft_model.get_base_model() if peft_model is not None else lm
    return getattr(base, base.base_model_prefix), base.get_output_embeddings()


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0: log-probs computed for a rollout or a reference and those
    of the update must come from the same function, or the first ratio is already off 1."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def entropy_from_logits(logits: torch.Tensor, lse: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim, shape logits.shape[:-1], in float32 (float64
    kept: half-precision logits are raised to float32 first). `lse`: logsumexp(logits) when known.

    H = logsumexp(z) − Σ_i p_i·z_i, exact under any shift of z; −inf logits (banned tokens) count as
    p = 0 and give no NaN, in value or gradient.
    """
    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()  # (..., V)
    if lse is None:
        lse = torch.logsumexp(z, dim=-1)  # (...)
    p = torch.exp(z - lse.unsqueeze(-1))
    finite = torch.where(torch.isneginf(z), torch.zeros((), dtype=z.dtype, device=z.device), z)
    return lse - (p * finite).sum(dim=-1)


@dataclass
class TokenLogprobs:
    logprobs: torch.Tensor
    """(...) float32 log π(a | s) of each chosen token, at the given temperature."""
    entropy: torch.Tensor | None
    """(...) float32 entropy of π(· | s), when asked for."""


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, *, temperature: float = 1.0, entropy: bool | str = False
) -> TokenLogprobs:
    """log π(tokens) under softmax(logits / temperature), and optionally the entropy.

    `logits` (..., V) at the positions that predict `tokens` (...). A temperature <= 0 (greedy
    decoding) reads the model at temperature 1. log π(a) = z_a − logsumexp(z): no (..., V)
    log-softmax is kept for backward. `entropy`: True computes it as a metric (no gradient),
    "grad" as a term of a loss.
    """
    z = logits.float()  # (..., V)
    if temperature > 0 and temperature != 1.0:
        z = z / temperature
    lse = torch.logsumexp(z, dim=-1)  # (...)
    picked = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse  # (...)
    ent = None
    if entropy:
        # Differentiable only when it is part of the loss; as a metric it costs no graph.
        with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
            ent = entropy_from_logits(z, lse)
    return TokenLogprobs(picked, ent)


@torch.no_grad()
def completion_logprobs(
    model: Any,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    *,
    batch_size: int = 16,
    temperature: float = 1.0,
    pad_id: int = 0,
) -> list[list[float]]:
    """log π(y_t | x, y_<t) of every completion token under `model` at `temperature` (see
    `token_logprobs`), `batch_size` sequences at a time.

    Each (prompt + completion) is one right-padded row; the hidden state at position t predicts
    token t + 1, and the LM head runs only where a completion token is predicted. An
    encoder-decoder reads the prompts with its encoder and the completions with its decoder.
    """
    from rlhf.data.rows import pad_right
    from rlhf.models.seq2seq import is_seq2seq

    if is_seq2seq(model):
        return _answer_logprobs(model, prompt_ids, completion_ids, batch_size, temperature, pad_id)
    backbone, head = causal_parts(model)
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(prompt_ids), batch_size):
        prompts, completions = (
            prompt_ids[start : start + batch_size],
            completion_ids[start : start + batch_size],
        )
        ids, mask = pad_right([p + c for p, c in zip(prompts, completions)], pad_id)  # (B, T)
        hidden = backbone(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        rows = torch.tensor([i for i, c in enumerate(completions) for _ in c], dtype=torch.long)  # (M,)
        cols = torch.tensor([len(p) - 1 + t for p, c in zip(prompts, completions) for t in range(len(c))])
        targets = torch.tensor([t for c in completions for t in c], dtype=torch.long)  # (M,)
        picked = token_logprobs(head(hidden[rows.to(device), cols.to(device)]), targets.to(device),
                                temperature=temperature).logprobs.cpu()  # fmt: skip
        at = 0
        for c in completions:
            out.append(picked[at : at + len(c)].tolist())
            at += len(c)
    return out


def _answer_logprobs(
    model: Any,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    batch_size: int,
    temperature: float,
    pad_id: int,
) -> list[list[float]]:
    """`completion_logprobs` of an encoder-decoder: decoder position t predicts completion token t."""
    from rlhf.models.seq2seq import pad_rows, read_answers

    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(prompt_ids), batch_size):
        completions = completion_ids[start : start + batch_size]
        prompts, prompt_mask = pad_rows(prompt_ids[start : start + batch_size], pad_id)  # (B, P)
        answers, answer_mask = pad_rows(completions, pad_id)  # (B, N)
        logits = read_answers(
            model,
            prompts.to(device),
            prompt_mask.to(device),
            answers.to(device),
            answer_mask.to(device),
            pad_id=pad_id,
        ).logits
        picked = token_logprobs(logits, answers.to(device), temperature=temperature).logprobs.cpu()  # (B, N)
        out += [picked[b, : len(c)].tolist() for b, c in enumerate(completions)]
    return out
