"""Encoder-decoder language models (T5, FLAN-T5, BART) read at their answers.

A decoder-only LM reads one row, prompt then answer, and the state at the last prompt token predicts
the first answer token. An encoder-decoder reads the prompt with its encoder and the answer with its
decoder, which starts from the model's `decoder_start_token_id`: decoder position t reads the answer
tokens before t (teacher forcing) and predicts answer token t. So every answer token is predicted,
the first one included, and no position of the decoder belongs to the prompt.

Prompts are always right padded for the encoder: models with absolute position embeddings (BART)
would otherwise read a left-padded prompt at other positions than it was trained on. The stages
keep their own layouts (a PPO rollout's left-padded prompt then response) and convert here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def base_of(model: Any) -> Any:
    """The transformers model inside `model` (a PeftModel, a DDP or FSDP wrapper, or itself)."""
    from rlhf.models.adapters import find_peft_model

    inner = getattr(model, "module", model)
    peft_model = find_peft_model(inner)
    return peft_model.get_base_model() if peft_model is not None else inner


def is_seq2seq(model: Any) -> bool:
    """Whether `model` (or the model inside it) is an encoder-decoder."""
    config = getattr(base_of(model), "config", None)
    return bool(getattr(config, "is_encoder_decoder", False))


def start_token(model: Any) -> int:
    """The token the decoder starts from."""
    config = base_of(model).config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(getattr(base_of(model), "generation_config", None), "decoder_start_token_id", None)
    if start is None:
        raise ValueError(f"{type(base_of(model)).__name__} names no decoder_start_token_id")
    return int(start)


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of `rows` right padded to the longest: (B, T) each."""
    width = max((len(row) for row in rows), default=0)
    ids = torch.full((len(rows), max(width, 1)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, : len(row)] = 1
    return ids, mask


def decoder_inputs(answers: torch.Tensor, answer_mask: torch.Tensor, start: int, pad_id: int) -> tuple:
    """Teacher forcing: (decoder_input_ids, decoder_attention_mask), (B, N) each, for right-padded
    `answers` (B, N): the start token, then every answer token but the last."""
    shifted = torch.full_like(answers, pad_id)
    shifted[:, 0] = start
    shifted[:, 1:] = answers[:, :-1]
    mask = torch.ones_like(answer_mask)
    mask[:, 1:] = answer_mask[:, :-1]
    return shifted, mask


def _starts(mask: torch.Tensor) -> torch.Tensor:
    """(B,) the column where each row's real tokens start: rows are one contiguous block of ones
    (left padded, right padded, or both)."""
    width = mask.shape[1]
    return (mask.long().cumsum(dim=1) == 0).sum(dim=1).clamp(max=width - 1)


def right_align(ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, P) batch whose rows' tokens are one contiguous block each (left padded) moved to the
    left edge (right padded), mask included."""
    width = ids.shape[1]
    cols = (torch.arange(width, device=ids.device)[None, :] + _starts(mask)[:, None]) % width  # (B, P)
    moved = ids.gather(1, cols)
    moved_mask = mask.gather(1, cols)
    return moved.masked_fill(moved_mask == 0, pad_id), moved_mask


def undo_right_align(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, P) `values` of a batch that `right_align` moved, put back in the columns of `mask`."""
    width = values.shape[1]
    cols = (torch.arange(width, device=values.device)[None, :] - _starts(mask)[:, None]) % width
    return values.gather(1, cols)


@dataclass
class AnswerReadout:
    logits: torch.Tensor
    """(B, N, V) the decoder's logits at every answer position (position t predicts answer token t)."""
    hidden: torch.Tensor | None
    """(B, N, H) the decoder's last hidden states there, when asked for (a value head reads them)."""


def read_answers(
    lm: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answers: torch.Tensor,
    answer_mask: torch.Tensor,
    *,
    pad_id: int,
    hidden: bool = False,
) -> AnswerReadout:
    """One forward of an encoder-decoder: the encoder reads the right-padded prompts (B, P), the
    decoder the answers (B, N) by teacher forcing. The model's own head makes the logits (T5
    rescales tied embeddings, BART adds a bias: every architecture as it predicts)."""
    dec_ids, dec_mask = decoder_inputs(answers, answer_mask, start_token(lm), pad_id)
    out = lm(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        decoder_input_ids=dec_ids,
        decoder_attention_mask=dec_mask,
        output_hidden_states=hidden,
        use_cache=False,
    )
    return AnswerReadout(out.logits, out.decoder_hidden_states[-1] if hidden else None)


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed negative log-likelihood, tokens) of `labels` (B, N; -100 where nothing is predicted)
    under decoder `logits` (B, N, V): position t predicts label t, no shift (see the module)."""
    keep = labels != -100
    picked = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.clamp(min=0).reshape(-1), reduction="none"
    ).reshape(labels.shape)
    return (picked * keep).sum(), int(keep.sum())


def collate_seq2seq(rows: list, pad_id: int, start: int) -> dict[str, Any]:
    """A batch for an encoder-decoder (one example per row, never packed): the prompts for the
    encoder and the answers for the decoder, right padded, (B, P) and (B, N) tensors: input_ids,
    attention_mask (the prompts), decoder_input_ids, decoder_attention_mask (the answers shifted
    right behind `start`, teacher forcing) and labels (the answers; IGNORE_INDEX on padding)."""
    from rlhf.data.examples import IGNORE_INDEX

    if any(row.prompt_lens is None or len(row.prompt_lens) != 1 for row in rows):
        raise ValueError("an encoder-decoder batch takes unpacked rows that know their prompt length")
    prompts = [row.input_ids[: row.prompt_lens[0]] for row in rows]
    answers = [row.input_ids[row.prompt_lens[0] :] for row in rows]
    input_ids, attention_mask = pad_rows(prompts, pad_id)
    answer_ids, answer_mask = pad_rows(answers, pad_id)
    decoder_input_ids, decoder_attention_mask = decoder_inputs(answer_ids, answer_mask, start, pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids,
        "decoder_attention_mask": decoder_attention_mask,
        "labels": answer_ids.masked_fill(answer_mask == 0, IGNORE_INDEX),
    }
