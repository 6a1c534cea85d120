"""Next-token negative log-likelihood for causal language models (SFT, PPO-ptx)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""Label value that contributes nothing (prompt tokens, padding, packing boundaries)."""


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL and the number of tokens it covers.

    logits: (B, T, V) from a causal LM; position t predicts token t + 1.
    labels: (B, T) the input ids with IGNORE_INDEX where no loss is wanted; labels[:, 0] is never
    predicted (nothing comes before it).
    Returns (nll_sum, count): a float scalar in the logits' precision raised to float32, and a long
    scalar. The caller divides, so a mean can be taken over any set of micro-batches and processes.
    """
    # Shift the labels left rather than slicing the logits: slicing (B, T, V) would copy it.
    shift_labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T); the last position has no target
    nll_sum = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),  # (B*T, V)
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    count = (shift_labels != IGNORE_INDEX).sum()
    return nll_sum, count
