"""Token sequences into tensor rows: one per row right-padded, or packed end to end (positions restart)."""

from __future__ import annotations

import torch


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (N, T) with T = the longest sequence."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def pack_sequences(
    sequences: list[list[int]], pad_id: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Sequences best-fit into rows of at most `width` tokens: (input_ids, position_ids, last_index)
    with input_ids and position_ids (R, T) and last_index the (row, column) of each sequence's last
    token, in the order of `sequences`."""
    from rlhf.data.packing import best_fit, packed_positions

    bins = best_fit([len(s) for s in sequences], width)
    longest = max(sum(len(sequences[i]) for i in members) for members in bins)
    ids = torch.full((len(bins), longest), pad_id, dtype=torch.long)
    positions = torch.zeros((len(bins), longest), dtype=torch.long)
    rows = torch.zeros(len(sequences), dtype=torch.long)
    cols = torch.zeros(len(sequences), dtype=torch.long)
    for r, members in enumerate(bins):
        at = 0
        for i in members:
            n = len(sequences[i])
            ids[r, at : at + n] = torch.tensor(sequences[i], dtype=torch.long)
            rows[i], cols[i] = r, at + n - 1
            at += n
        positions[r] = torch.tensor(packed_positions([len(sequences[i]) for i in members], longest))
    return ids, positions, (rows, cols)
