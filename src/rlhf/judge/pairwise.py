"""A pairwise judge: which of two answers to one prompt is better, position bias controlled.

Each pair is asked in both orders (`both_orders`): answer a shown as A and b as B, then b as A and
a as B. The verdicts agree (a both times, b both times, or tie both times): that is the verdict. They
disagree: the judge preferred a position, not an answer, and the pair is a tie, marked
inconsistent. Either reply unreadable: the judge abstains on that pair (no verdict, counted).
P(a better) is the mean over the orders of the verdict tokens' probability, when the server
returns log-probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlhf.judge.client import make_client
from rlhf.judge.config import JudgeConfig
from rlhf.judge.templates import load_template, render
from rlhf.judge.verdict import parse_verdict, probability_a


@dataclass
class Verdict:
    """The judge's decision on one pair (a, b)."""

    winner: str | None
    """`a`, `b`, `tie`, or None when the judge abstained (a reply it could not read)."""
    p_a: float | None = None
    """P(a is better) from the verdict tokens' log-probabilities, averaged over the orders asked;
    None without log-probabilities."""
    inconsistent: bool = False
    """The two orders gave different verdicts (a position preference): counted as a tie."""
    replies: list[str] = field(default_factory=list)
    """The judge's raw replies, in the order asked (a first, then b first)."""


def prompt_text(prompt: Any) -> str:
    """A prompt (text, or chat messages) as the text the judge reads."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{getattr(m, 'role', None) or m['role']}: {getattr(m, 'content', None) or m['content']}"
                     for m in prompt)  # fmt: skip


class PairwiseJudge:
    """`judge.compare(prompts, answers_a, answers_b) -> [Verdict]`."""

    def __init__(self, cfg: JudgeConfig) -> None:
        self.cfg = cfg
        self.template = load_template(cfg.template)
        self.client = make_client(cfg)
        self.label = cfg.label

    def compare(
        self, prompts: Sequence[Any], answers_a: Sequence[str], answers_b: Sequence[str]
    ) -> list[Verdict]:
        if not len(prompts) == len(answers_a) == len(answers_b):
            raise ValueError(f"{len(prompts)} prompts, {len(answers_a)} and {len(answers_b)} answers")
        orders = (False, True) if self.cfg.both_orders else (False,)
        texts = []
        for prompt, a, b in zip(prompts, answers_a, answers_b):
            for swapped in orders:
                first, second = (b, a) if swapped else (a, b)
                texts.append(render(self.template, prompt_text(prompt), first, second))
        replies = self.client.ask_many(texts)  # a question asked twice (equal answers) is sent once
        per = len(orders)
        return [_decide(replies[i * per : (i + 1) * per]) for i in range(len(prompts))]

    def close(self) -> None:
        self.client.close()


def _decide(replies: list) -> Verdict:
    """One pair's verdict from its replies (the first with a shown as A, the second swapped)."""
    winners, probabilities = [], []
    for i, reply in enumerate(replies):
        said = parse_verdict(reply.text)
        swapped = i == 1
        winners.append(None if said is None else {"A": "b" if swapped else "a", "B": "a" if swapped else "b",
                                                  "tie": "tie"}[said])  # fmt: skip
        p = probability_a(reply.top_logprobs)
        if p is not None:
            probabilities.append(1.0 - p if swapped else p)
    texts = [r.text for r in replies]
    p_a = sum(probabilities) / len(probabilities) if len(probabilities) == len(replies) else None
    if any(w is None for w in winners):
        return Verdict(None, p_a, False, texts)
    if len(set(winners)) > 1:
        return Verdict("tie", p_a, True, texts)
    return Verdict(winners[0], p_a, False, texts)


def verdict_counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """How many pairs went to a, to b, were ties (of them inconsistent), and abstained."""
    return {
        "pairs": len(verdicts),
        "a": sum(v.winner == "a" for v in verdicts),
        "b": sum(v.winner == "b" for v in verdicts),
        "tie": sum(v.winner == "tie" for v in verdicts),
        "inconsistent": sum(v.inconsistent for v in verdicts),
        "abstained": sum(v.winner is None for v in verdicts),
    }
