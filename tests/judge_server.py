"""The tests' judge: `rlhf.judge.rule_server` answering by a written rule: of the two answers in the
judge's prompt, the one with more `e`s is better (a tie when equal), with the verdict tokens'
probabilities sigmoid(difference) and its complement; asked to rank several (the ranking template),
it orders them by their `e`s. The requested model name picks a behaviour:
`rule` (as above), `first` (always `A`: pure position bias), `garbage` (a reply that says nothing),
`flaky` (HTTP 503 for the first two requests, then `rule`).

    with judge_server() as server: ...   # server.url ("http://127.0.0.1:<port>/v1"), server.requests
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager

from rlhf.judge.rule_server import Reply, rule_server

ANSWERS = re.compile(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\nReply", re.S)
NUMBERED = re.compile(r"\[Answer (\d+)\]\n(.*?)(?=\n\n\[Answer \d+\]|\n\nReply)", re.S)


def rule_p_a(a: str, b: str) -> float:
    """P(A better) by the rule: sigmoid of the difference in `e`s."""
    return 1.0 / (1.0 + math.exp(-(a.count("e") - b.count("e"))))


def by_rule(a: str, b: str) -> Reply:
    p = rule_p_a(a, b)
    verdict = "tie" if a.count("e") == b.count("e") else ("A" if p > 0.5 else "B")
    return Reply(verdict, {"A": p, " B": 1 - p})


@contextmanager
def judge_server():
    calls = {"flaky": 0}

    def rule(model: str, text: str) -> Reply | None:
        if model == "garbage":
            return Reply("I cannot decide between these.")
        if model == "first":
            return Reply("A", {"A": 0.9, "B": 0.1})
        if model == "flaky":
            calls["flaky"] += 1
            if calls["flaky"] <= 2:
                return None
        numbered = NUMBERED.findall(text)
        if numbered:  # the ranking template: most `e`s first (ties in the order shown)
            best = sorted(numbered, key=lambda pair: -pair[1].count("e"))
            return Reply(" > ".join(number for number, _ in best))
        found = ANSWERS.search(text)
        assert found is not None, text
        return by_rule(*found.groups())

    with rule_server(rule) as server:
        yield server
