"""Held-out language-modelling loss: the token-weighted NLL of demonstrations' answers (or plain
text's every token) under a model, decoder-only or encoder-decoder. What SFT evaluates during
training and what `rlhf.eval.lm_loss` measures after any stage (the alignment tax)."""

from __future__ import annotations

import math

import torch

from rlhf.data.examples import Row, collate


def forward_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL, tokens) of a batch's labels: a causal LM's next tokens, or an encoder-decoder's
    answer tokens (its decoder predicts each one in place, see `rlhf.models.seq2seq`)."""
    from rlhf.losses import token_nll
    from rlhf.models.seq2seq import answer_nll

    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits  # (B, P + T, V); P virtual tokens with prompt tuning
    if "decoder_input_ids" in batch:
        nll, count = answer_nll(logits, labels)  # (B, N, V): the decoder's positions only
        return nll, torch.tensor(count, device=nll.device)
    return token_nll(logits[:, -labels.shape[1] :], labels)


def collate_batch(model, rows: list[Row], pad_id: int, packed: bool) -> dict[str, torch.Tensor]:
    """A batch of `rows` for `model`: an encoder-decoder's prompts and answers, or a causal LM's
    rows (packed or padded)."""
    from rlhf.models.seq2seq import collate_seq2seq, is_seq2seq, start_token

    if is_seq2seq(model):
        return collate_seq2seq(rows, pad_id, start_token(model))
    return collate(rows, pad_id, packed)


def evaluate(accelerator, model, rows: list[Row], batch_size: int, pad_id: int, packed: bool) -> dict:
    """Token-weighted held-out loss over all processes (each takes every N-th row) and perplexity.
    `packed`: how the rows are laid out (an encoder-decoder's rows: see `collate_batch`)."""
    was_training = model.training
    model.eval()
    from rlhf.training.sharding import even_batches

    nll = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    count = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    with torch.no_grad():
        for chunk, keep in even_batches(accelerator, len(rows), batch_size):
            batch = collate_batch(model, [rows[i] for i in chunk], pad_id, packed)
            batch_nll, batch_count = forward_nll(
                model, {k: v.to(accelerator.device) for k, v in batch.items()}
            )
            if keep:
                nll += batch_nll.double()
                count += batch_count.double()
    totals = accelerator.reduce(torch.stack([nll, count]), reduction="sum")
    model.train(was_training)
    loss = (totals[0] / totals[1].clamp(min=1)).item()
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": int(totals[1].item())}
