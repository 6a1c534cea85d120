"""Reading a judge's reply: the verdict (A, B or tie) and, from the verdict token's
log-probabilities, the probability that A is the better answer.

A reply is read only when it says one thing: `A`, `B` or `tie` as its first word (brackets, quotes,
`Answer:`/`Verdict:` and punctuation around it allowed: `[[A]]`, "**B**.", "Answer: tie"), or as
the one verdict letter it names (`Answer A is better`). Anything else is None: an abstention,
counted and shown, never a guess.
"""

from __future__ import annotations

import math
import re
from typing import Any

VERDICTS = ("A", "B", "tie")
_FIRST = re.compile(r"^\W*(?:(?:final\s+)?(?:answer|verdict|choice)\s*[:\-]\s*)?\W*(A|B|tie)\b", re.I)
_NAMED = re.compile(r"\banswer\s+(A|B)\b", re.I)


def parse_verdict(text: str) -> str | None:
    """`A`, `B`, `tie`, or None when the reply does not say one of them unambiguously."""
    first = _FIRST.match(text.strip())
    if first:
        word = first.group(1)
        return "tie" if word.lower() == "tie" else word.upper()
    named = {m.upper() for m in _NAMED.findall(text)}
    return named.pop() if len(named) == 1 else None


def probability_a(top_logprobs: list[dict[str, Any]] | None) -> float | None:
    """P(A better) from the first token's alternatives (OpenAI `top_logprobs`: [{token, logprob}]):
    the renormalized mass of `A` against `B` (tokens compared after stripping spaces, any case);
    None when the server returned no log-probabilities or neither letter is among them."""
    if not top_logprobs:
        return None
    mass = {"A": 0.0, "B": 0.0}
    for entry in top_logprobs:
        token = str(entry.get("token", "")).strip().upper()
        if token in mass and isinstance(entry.get("logprob"), int | float):
            mass[token] += math.exp(entry["logprob"])
    total = mass["A"] + mass["B"]
    return mass["A"] / total if total > 0 else None
