"""The LLM judge as an evaluator: its verdict on the policy's answer against the baseline's for every
prompt (both orders asked, `rlhf.judge`), and the policy's win rate by it.

A win counts 1, a tie (the judge's, or an inconsistent pair: a different verdict in each order) ½;
an abstention (a reply the judge's output could not be read from) is left out of the rate and
counted. The 95% interval is the same normal approximation as the score judges' (`win_rate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlhf.eval.metrics import Z95, mean_stat


def judge_answers(cfg: Any, prompts: Sequence[Any], mine: Sequence[str], theirs: Sequence[str]) -> list:
    """The judge's verdict on each (policy answer, baseline answer) pair: `a` is the policy."""
    from rlhf.judge import PairwiseJudge

    judge = PairwiseJudge(cfg)
    try:
        return judge.compare(prompts, mine, theirs)
    finally:
        judge.close()


def judge_win_rate(verdicts: Sequence[Any]) -> dict[str, Any]:
    """The policy's win rate by the judge over the pairs it decided, with its interval and counts."""
    from rlhf.judge import verdict_counts

    outcomes = [{"a": 1.0, "tie": 0.5, "b": 0.0}[v.winner] for v in verdicts if v.winner is not None]
    counts = verdict_counts(verdicts)
    stat = mean_stat(outcomes)
    low = high = None
    if stat.mean is not None and stat.stderr is not None:
        low, high = max(0.0, stat.mean - Z95 * stat.stderr), min(1.0, stat.mean + Z95 * stat.stderr)
    return {"n": len(outcomes), "wins": counts["a"], "ties": counts["tie"], "losses": counts["b"],
            "rate": stat.mean, "low": low, "high": high, "inconsistent": counts["inconsistent"],
            "abstained": counts["abstained"]}  # fmt: skip


def verdict_row(verdict: Any) -> dict[str, Any]:
    """One prompt's verdict as samples.jsonl holds it (`policy`/`baseline` for the judge's a/b)."""
    winner = {"a": "policy", "b": "baseline"}.get(verdict.winner, verdict.winner)
    return {"winner": winner, "p_policy": verdict.p_a, "inconsistent": verdict.inconsistent,
            "replies": verdict.replies}  # fmt: skip
