"""The demo's simulated LLM judge: the task's gold rule behind an OpenAI-compatible endpoint, wrong on
a share of the pairs, so AI feedback can be tried (and audited) offline.

It reads the built-in pairwise template (`rlhf.judge.templates.PAIRWISE`) and answers `A` or `B` for
the answer with the higher gold score (`tie` when equal), with verdict probabilities
sigmoid(Δgold / temperature). On a seeded `flip` share of the pairs it prefers the other answer —
the same pair flipped in both orders, so the error is a consistent one, as a judge's mistakes are,
and not a position preference (which `both_orders` would catch as a tie).

    with simulated_judge(flip=0.2, seed=0) as server:
        JudgeConfig(url=server.url, model_name=SIMULATED_MODEL)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rlhf.demo.task import document_of, gold
from rlhf.judge.rule_server import Reply, rule_server

SIMULATED_MODEL = "gold-rule"
"""The model name the simulated judge answers to (any name is answered the same way)."""
_QUESTION = re.compile(r"\[Request\]\n(.*)\n\n\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\nReply", re.S)


def flipped(prompt: str, a: str, b: str, flip: float, seed: int) -> bool:
    """Whether the judge is wrong on this pair: a seeded draw of the unordered pair (the same in
    both orders and on every run)."""
    low, high = sorted((a, b))
    digest = hashlib.sha256(f"{seed}\x00{prompt}\x00{low}\x00{high}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < flip


def verdict(prompt: str, a: str, b: str, *, flip: float, seed: int, temperature: float = 1.0) -> Reply:
    """The simulated judge's reply to one ordering of a pair."""
    doc = document_of(prompt)
    diff = gold(doc, a) - gold(doc, b)
    if diff == 0:
        return Reply("tie", {"A": 0.5, "B": 0.5})
    if flipped(prompt, a, b, flip, seed):
        diff = -diff
    p_a = 1.0 / (1.0 + math.exp(-diff / temperature))
    return Reply("A" if diff > 0 else "B", {"A": p_a, "B": 1.0 - p_a})


@contextmanager
def simulated_judge(flip: float = 0.2, seed: int = 0, temperature: float = 1.0) -> Iterator[Any]:
    """The endpoint, on a free port of 127.0.0.1, for the length of the block (`server.url`)."""

    def rule(_model: str, text: str) -> Reply:
        found = _QUESTION.search(text)
        if found is None:  # not the built-in template: say nothing readable (an abstention)
            return Reply("The simulated judge reads only the built-in pairwise template.")
        return verdict(*found.groups(), flip=flip, seed=seed, temperature=temperature)

    with rule_server(rule) as server:
        yield server
