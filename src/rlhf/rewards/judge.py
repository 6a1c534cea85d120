"""The LLM judge as a reward: the samples of each prompt compared with each other, both orders asked.

For a prompt with K samples (`rollout.samples_per_prompt`, as RLOO and GRPO draw them), every pair
of its samples goes to the judge (K(K-1)/2 pairs, 2 requests each); the score of sample i against j
is the judge's P(i better) from the verdict tokens' log-probabilities, or, without them, 1 for a
win, ½ for a tie (its own or an inconsistent pair) and 0 for a loss. A sample's reward is its mean
score against the prompt's other samples, in [0, 1]: a group-wise ranking, relative within the
prompt as RLOO's and GRPO's baselines are. A pair the judge abstained on counts for neither; a sample
with no decided pair gets ½. The share of pairs abstained on is logged (`judge_abstained`).

`mode="rank"` asks once per prompt instead (twice with `both_orders`): the judge orders the K samples
(`rlhf.judge.ranking`) and a sample's reward is 1 − place / (K − 1), 1 for the best and 0 for the
worst; a group the judge abstained on or ranked differently in the two orders gets ½ for every
sample (logged as `judge_abstained` 1 for its samples).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from rlhf.data.jsonl import prompts_to_json
from rlhf.data.records import Prompt
from rlhf.rewards.sources import RewardSourceError, SourceOutput


class JudgeSource:
    """`source(prompts, completions) -> SourceOutput`: each completion's mean chance of beating the
    other completions of its prompt, by an LLM judge."""

    stats: tuple[float, float] | None = None

    def __init__(self, cfg: Any, mode: str = "pairs") -> None:
        from rlhf.judge import PairwiseJudge
        from rlhf.judge.ranking import RankingJudge

        self.mode = mode
        self.judge = PairwiseJudge(cfg) if mode == "pairs" else None
        self.ranker = RankingJudge(cfg) if mode == "rank" else None
        self.label = cfg.label

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> SourceOutput:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(str(p) for p in prompts_to_json(prompts)):
            groups.setdefault(key, []).append(i)
        if any(len(members) < 2 for members in groups.values()):
            raise RewardSourceError(
                f"{self.label}: the judge compares a prompt's samples with each other; give each prompt 2 or "
                "more samples (`rollout.samples_per_prompt`)"
            )
        if self.ranker is not None:
            return self._ranked(prompts, completions, list(groups.values()))
        assert self.judge is not None
        pairs = [pair for members in groups.values() for pair in itertools.combinations(members, 2)]
        verdicts = self.judge.compare([prompts[i] for i, _ in pairs], [completions[i] for i, _ in pairs],
                                      [completions[j] for _, j in pairs])  # fmt: skip
        totals = [0.0] * len(completions)
        counts = [0] * len(completions)
        abstained = [0] * len(completions)
        for (i, j), verdict in zip(pairs, verdicts):
            score = pair_score(verdict)
            if score is None:
                abstained[i] += 1
                abstained[j] += 1
                continue
            totals[i], totals[j] = totals[i] + score, totals[j] + 1.0 - score
            counts[i], counts[j] = counts[i] + 1, counts[j] + 1
        rewards = [t / c if c else 0.5 for t, c in zip(totals, counts)]
        others = [len(groups[str(p)]) - 1 for p in prompts_to_json(prompts)]
        return SourceOutput(rewards, {"judge_abstained": [a / n for a, n in zip(abstained, others)]})

    def _ranked(
        self, prompts: Sequence[Prompt], completions: Sequence[str], groups: list[list[int]]
    ) -> SourceOutput:
        assert self.ranker is not None
        ranked = self.ranker.rank(
            [prompts[m[0]] for m in groups], [[completions[i] for i in m] for m in groups]
        )
        rewards = [0.5] * len(completions)
        abstained = [0.0] * len(completions)
        for members, verdict in zip(groups, ranked):
            if verdict.order is None:
                for i in members:
                    abstained[i] = 1.0
                continue
            for place, index in enumerate(verdict.order):
                rewards[members[index]] = 1.0 - place / (len(members) - 1)
        return SourceOutput(rewards, {"judge_abstained": abstained})


def pair_score(verdict: Any) -> float | None:
    """P(a better): the verdict tokens' probability when there is one, else 1, ½ or 0 by the
    verdict; None when the judge abstained."""
    if verdict.winner is None:
        return None
    if verdict.p_a is not None:
        return verdict.p_a
    return {"a": 1.0, "tie": 0.5, "b": 0.0}[verdict.winner]
