"""Over-optimization: a policy that pleases the reward model more than what the reward model stands
for. Two signs, each said in one line with its numbers where a run shows it:

- **A gap at the end** (`reward_gap`): the policy's held-out win rate over the baseline by the reward
  model exceeds its win rate by an independent judge (gold, an LLM judge) by more than `gap`. A
  reward model that tracked the independent judge would win about as often by both.
- **A turn during PPO** (`turn`): the independent score of the training samples (a weight-0 reward
  source, e.g. the pipeline's gold) peaked and then fell while the optimized reward kept rising.
  Windows of steps are compared, not single steps: the fall must exceed twice its standard error.

Plain Python over numbers already measured; no model is loaded.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

GAP = 0.1
"""Default largest tolerated excess of the reward model's win rate over the independent one's."""
INDEPENDENT = ("gold", "judge")
"""Win-rate judges that do not share the reward model's blind spots, in order of preference."""


def reward_gap(win_rates: Mapping[str, Any], gap: float = GAP) -> dict[str, Any] | None:
    """The reward model's win rate against the first independent one measured; None when either is
    missing. `flagged` when the excess is over `gap`."""
    reward = (win_rates.get("reward") or {}).get("rate")
    by = next((name for name in INDEPENDENT if (win_rates.get(name) or {}).get("rate") is not None), None)
    if reward is None or by is None:
        return None
    independent = win_rates[by]["rate"]
    return {"by": by, "reward_win_rate": reward, "independent_win_rate": independent,
            "gap": reward - independent, "threshold": gap, "flagged": reward - independent > gap}  # fmt: skip


def gap_line(entry: Mapping[str, Any] | None) -> str | None:
    """The one line a flagged gap gets; None when there is none to say."""
    if not entry or not entry.get("flagged"):
        return None
    return (
        f"over-optimization: the policy wins {entry['reward_win_rate']:.3f} by the reward model but "
        f"{entry['independent_win_rate']:.3f} by {entry['by']} (gap {entry['gap']:.3f} > {entry['threshold']:g}): "
        "it exploits the reward model; read its answers, and compare an earlier checkpoint or a larger KL penalty"
    )


def turn(
    steps: Sequence[int], reward: Sequence[float], score: Sequence[float], name: str = "gold"
) -> dict[str, Any] | None:
    """Whether `score` (independent) peaked and fell while `reward` (optimized) rose over the steps:
    the best window of `score` (windows of a fifth of the run, at least 3 steps) against the last
    one. None when the run is too short to tell (fewer than two windows)."""
    n = len(score)
    width = max(3, n // 5)
    if n < 2 * width or len(reward) != n or len(steps) != n:
        return None
    means = [statistics.fmean(score[i : i + width]) for i in range(n - width + 1)]
    best = max(range(len(means)), key=lambda i: means[i])
    last = len(means) - 1
    spread = [statistics.stdev(score[i : i + width]) for i in (best, last)]
    stderr = math.sqrt(sum(s * s for s in spread) / width)
    reward_then = statistics.fmean(reward[best : best + width])
    reward_now = statistics.fmean(reward[last:])
    fell = means[best] - means[last]
    return {
        "score": name, "best_steps": [steps[best], steps[best + width - 1]], "best": means[best],
        "last": means[last], "fall": fell, "stderr": stderr, "reward_at_best": reward_then, "reward_last": reward_now,
        "flagged": best < last and fell > 2 * stderr and reward_now > reward_then,
    }  # fmt: skip


def turn_line(entry: Mapping[str, Any] | None) -> str | None:
    """The one line a flagged turn gets; None when there is none to say."""
    if not entry or not entry.get("flagged"):
        return None
    low, high = entry["best_steps"]
    return (
        f"over-optimization: {entry['score']} of the training samples peaked at {entry['best']:.3f} (steps "
        f"{low}-{high}) and fell to {entry['last']:.3f} by the end (−{entry['fall']:.3f}, over twice its "
        f"standard error {entry['stderr']:.3f}) while the reward rose {entry['reward_at_best']:.3f} -> "
        f"{entry['reward_last']:.3f}"
    )
