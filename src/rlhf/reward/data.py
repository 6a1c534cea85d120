"""Reward-model batches: groups of completions (`rlhf.preference.groups`) -> one flat batch per micro-batch.

`collate_groups` lays all completions of all groups of a micro-batch end to end into one (N, T)
batch, padded or packed, and the pairs, ranks or targets of its `Layout` index that flat vector of N
rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlhf.data.rows import pack_sequences, pad_right
from rlhf.losses.reward import Ties
from rlhf.preference.groups import Group, Layout, layout_groups


@dataclass
class RewardBatch:
    """A micro-batch: every completion of every group, in one batch of rows.

    Padded: one completion per row, right-padded, with an attention mask. Packed: completions end
    to end in rows (see `rlhf.data.packing`), position ids restarting per completion, no mask, and
    `last_index` saying where each completion ends. Either way `model(**batch.inputs())` gives one
    reward per completion in group order.
    """

    input_ids: torch.Tensor
    """(R, T) long, right-padded with pad_id; T = the longest row of the batch."""
    attention_mask: torch.Tensor | None
    """(R, T) long, 1 on real tokens (padded layout); None when packed."""
    layout: Layout
    """Offsets, pairs / ranks / targets and the weight count."""
    position_ids: torch.Tensor | None = None
    """(R, T) long, packed layout only: 0.. for each completion."""
    last_index: tuple[torch.Tensor, torch.Tensor] | None = None
    """Packed layout only: (row, column) of each completion's last token, each (N,) long."""

    @property
    def count(self) -> int:
        return self.layout.count

    def inputs(self) -> dict[str, Any]:
        """Keyword arguments of `ScalarModel.forward`."""
        if self.attention_mask is not None:
            return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        return {"input_ids": self.input_ids, "position_ids": self.position_ids, "last_index": self.last_index}

    def to(self, device) -> RewardBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        last = (
            None
            if self.last_index is None
            else (self.last_index[0].to(device), self.last_index[1].to(device))
        )
        return RewardBatch(
            self.input_ids.to(device), move(self.attention_mask), self.layout, move(self.position_ids), last
        )


def collate_groups(
    groups: list[Group],
    pad_id: int,
    *,
    mode: str = "pairwise",
    ties: Ties = "skip",
    pack_width: int | None = None,
) -> RewardBatch:
    """One RewardBatch from `groups` for the `loss_mode` `mode`: all completions in group order,
    padded one per row, or packed into rows of at most `pack_width` tokens when it is given."""
    sequences = [seq for g in groups for seq in g.input_ids]
    layout = layout_groups(groups, mode, ties)
    if pack_width is None:
        ids, mask = pad_right(sequences, pad_id)
        return RewardBatch(ids, mask, layout)
    ids, positions, last = pack_sequences(sequences, pad_id, pack_width)
    return RewardBatch(ids, None, layout, positions, last)
