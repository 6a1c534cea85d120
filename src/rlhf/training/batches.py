"""A reproducible, resumable, process-sharded order of training items.

Epoch e visits the items in `random.Random(seed + e)` order (or file order without shuffling);
the epochs are laid end to end into one endless stream, which is cut into *global micro-batches*
of `batch_size x num_processes` items. Process r takes the r-th slice of each. So:

- the global micro-batch m is the same items whatever the number of processes: 2 processes x 2
  see what 1 process x 4 sees, which is what makes their losses comparable;
- no item is dropped at an epoch's end: the last micro-batch of an epoch runs into the next;
- the position is one number (micro-batches consumed), so resuming is `start=position`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


class BatchStream:
    """Endless iterable of this process's index lists, one per micro-batch."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        num_processes: int = 1,
        process_index: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        start: int = 0,
    ) -> None:
        if num_items < 1:
            raise ValueError("BatchStream needs at least one item")
        self.num_items = num_items
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.seed = seed
        self.shuffle = shuffle
        self.position = start
        """Micro-batches handed out so far (including those skipped by `start`)."""
        self._orders: dict[int, list[int]] = {}

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_processes

    def epoch_order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(self.num_items))
            if self.shuffle:
                random.Random(self.seed + epoch).shuffle(order)
            self._orders = {epoch: order}  # only the current epoch is ever needed again
        return self._orders[epoch]

    def items(self, position: int) -> list[int]:
        """The indices this process gets in global micro-batch `position`."""
        first = position * self.global_batch + self.process_index * self.batch_size
        out = []
        for k in range(first, first + self.batch_size):
            epoch, offset = divmod(k, self.num_items)
            out.append(self.epoch_order(epoch)[offset])
        return out

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            batch = self.items(self.position)
            self.position += 1
            yield batch

    def epochs_done(self) -> float:
        """Passes over the data so far (micro-batches x global batch / items)."""
        return self.position * self.global_batch / self.num_items
