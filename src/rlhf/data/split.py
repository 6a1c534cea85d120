"""Holding data out: a seeded share of the records kept for evaluation, the same on every process."""

from __future__ import annotations

import random
from typing import TypeVar

from rlhf.data.errors import DataError

R = TypeVar("R")


def split_eval(records: list[R], fraction: float, seed: int) -> tuple[list[R], list[R]]:
    """(train, eval): a seeded random `fraction` of the records held out (at least one)."""
    if fraction <= 0:
        return records, []
    count = max(1, round(len(records) * fraction))
    if count >= len(records):
        raise DataError(
            None, None, None, f"eval.fraction {fraction} of {len(records)} records leaves nothing to train on"
        )
    held = set(random.Random(seed).sample(range(len(records)), count))
    train = [r for i, r in enumerate(records) if i not in held]
    return train, [r for i, r in enumerate(records) if i in held]
