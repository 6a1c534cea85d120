"""Packing: several token sequences end to end in one row, kept apart by restarting position ids.

Pure Python (no torch): SFT packs demonstrations into rows, the reward stage packs the completions
of a micro-batch. A model sees a packed row without an attention mask and with `position_ids` that
restart at 0 for every sequence; transformers reads those restarts as sequence boundaries (for
models whose attention goes through its `create_causal_mask`, with `use_cache=False`), so no
sequence attends to another.
"""

from __future__ import annotations

import bisect


def best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of total length <= `capacity` (a length larger than
    `capacity` gets a bin of its own). Best-fit decreasing: longest first, each into the fullest
    bin that still has room. Each bin lists its indices in increasing order, and bins are ordered by
    their first index, so packed data keeps its original order as far as it can."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for index in order:
        size = lengths[index]
        slot = bisect.bisect_left(free, (size, -1))
        if slot < len(free):
            room, bin_index = free.pop(slot)
        else:
            room, bin_index = capacity, len(bins)
            bins.append([])
        bins[bin_index].append(index)
        if room - size > 0:
            bisect.insort(free, (room - size, bin_index))
    for members in bins:
        members.sort()
    bins.sort(key=lambda members: members[0])
    return bins


def packed_positions(lengths: list[int], width: int) -> list[int]:
    """Position ids of a row of `width` holding sequences of `lengths` end to end: 0.. for each
    sequence, then 0.. again over the padding tail (one more segment that nothing reads)."""
    used = sum(lengths)
    segments = [*lengths, width - used] if width > used else lengths
    return [p for length in segments for p in range(length)]
