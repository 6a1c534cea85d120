"""A ranking judge: K answers to one prompt ordered best to worst in one question, position bias
controlled.

Each group is asked as given and, with `both_orders`, with the answers in reverse order; the two
rankings (mapped back to the answers) must be the same, else the judge preferred positions and the
group is marked inconsistent, with no ranking. A reply that is not a permutation of the answer
numbers (`2 > 3 > 1`; commas, `>` or spaces between them) is an abstention, counted, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlhf.judge.client import make_client
from rlhf.judge.config import JudgeConfig
from rlhf.judge.pairwise import prompt_text
from rlhf.judge.templates import RANKING_FIELDS, load_template, render_ranking

_NUMBERS = re.compile(r"\d+")
_RANKING = re.compile(r"^\W*(?:ranking\s*:\s*)?\[?\d+\]?(?:\s*(?:>|,|>>|\s)\s*\[?\d+\]?)*\W*$", re.I)


@dataclass
class RankVerdict:
    """The judge's ranking of one group's answers."""

    order: list[int] | None
    """Answer indices best first; None when the judge abstained or was inconsistent."""
    inconsistent: bool = False
    """The two orders asked gave different rankings."""
    replies: list[str] = field(default_factory=list)
    """The raw replies (as given, then reversed)."""


def parse_ranking(text: str, k: int) -> list[int] | None:
    """0-based answer indices best first, or None unless the reply is exactly a ranking of 1..k."""
    if not _RANKING.match(text.strip()):
        return None
    numbers = [int(n) for n in _NUMBERS.findall(text)]
    if sorted(numbers) != list(range(1, k + 1)):
        return None
    return [n - 1 for n in numbers]


class RankingJudge:
    """`judge.rank(prompts, groups) -> [RankVerdict]`; each group holds two or more answers."""

    def __init__(self, cfg: JudgeConfig) -> None:
        self.cfg = cfg
        self.template = load_template(cfg.ranking_template, RANKING_FIELDS)
        self.client = make_client(cfg)

    def rank(self, prompts: Sequence[Any], groups: Sequence[Sequence[str]]) -> list[RankVerdict]:
        if len(prompts) != len(groups):
            raise ValueError(f"{len(prompts)} prompts and {len(groups)} groups of answers")
        asks = []  # (text, group index, shown order)
        for g, (prompt, answers) in enumerate(zip(prompts, groups)):
            forward = list(range(len(answers)))
            for shown in (forward, forward[::-1]) if self.cfg.both_orders else (forward,):
                text = render_ranking(self.template, prompt_text(prompt), [answers[i] for i in shown])
                asks.append((text, g, shown))
        budget = max(self.cfg.max_tokens, 4 * max((len(a) for a in groups), default=2))
        replies = self.client.ask_many([text for text, _, _ in asks], budget)
        read: list[list[tuple[str, list[int] | None]]] = [[] for _ in groups]
        for (_, g, shown), answered in zip(asks, replies):
            reply = answered.text
            ranking = parse_ranking(reply, len(shown))
            read[g].append((reply, None if ranking is None else [shown[p] for p in ranking]))
        return [_decide(per) for per in read]

    def close(self) -> None:
        self.client.close()


def _decide(per: list[tuple[str, list[int] | None]]) -> RankVerdict:
    replies = [reply for reply, _ in per]
    orders = [order for _, order in per]
    if any(order is None for order in orders):
        return RankVerdict(None, False, replies)
    if any(order != orders[0] for order in orders):
        return RankVerdict(None, True, replies)
    return RankVerdict(orders[0], False, replies)
