"""The metric columns of `rlhf eval policy`: per-answer numbers that are not judges (no win rate),
reported for each policy with the policy's difference from the baseline and its 95% interval.

Two kinds: reference metrics (ROUGE-1/2/L and exact match against people's reference answers,
`rlhf.eval.references`) when the held-out prompts carry references, and `eval.metrics`, any reward
source read as a metric (a toxicity classifier's label probability, a function) through the same
reward-source machinery PPO uses (`rlhf.rewards`).
"""

from __future__ import annotations

from typing import Any

from rlhf.eval.metrics import mean_stat, paired_difference

Columns = dict[str, dict[str, list[float | None]]]
"""policy name -> metric -> (P,) its value for each prompt's answer (None: no reference)."""


def metric_columns(inputs: Any, answers: dict[str, list]) -> Columns:
    """Every answer's reference metrics (when there are references) and `eval.metrics`."""
    from rlhf.eval.config import metric_name
    from rlhf.eval.references import reference_scores
    from rlhf.rewards.config import RewardSourcesConfig
    from rlhf.rewards.function import RawScorer

    columns: Columns = {name: {} for name in answers}
    if inputs.references is not None:
        for name, samples in answers.items():
            columns[name].update(reference_scores([s.text for s in samples], inputs.references))
    for source in inputs.cfg.metrics:
        scorer = RawScorer(RewardSourcesConfig(sources=[source]), device=inputs.device)
        metric = metric_name(source)
        for name, samples in answers.items():
            columns[name][metric] = list(scorer(inputs.texts, [s.text for s in samples]).rewards)
        del scorer  # one classifier in memory at a time
    return columns


def summarize(columns: Columns) -> dict[str, Any]:
    """`<policy>_metrics` (mean and standard error of each metric over the prompts that have it)
    and `metric_differences` (policy − baseline, paired over the prompts both have, with the 95%
    interval), as eval.json holds them."""
    out: dict[str, Any] = {}
    for name, metrics in columns.items():
        out[name + "_metrics"] = {
            metric: mean_stat([v for v in values if v is not None]).as_dict()
            for metric, values in metrics.items()
        }
    if "policy" in columns and "baseline" in columns:
        differences = {}
        for metric, mine in columns["policy"].items():
            theirs = columns["baseline"].get(metric)
            if theirs is None:
                continue
            pairs = [(a, b) for a, b in zip(mine, theirs) if a is not None and b is not None]
            differences[metric] = paired_difference([a for a, _ in pairs], [b for _, b in pairs]).as_dict()
        out["metric_differences"] = differences
    return out


def columns_text(result: dict[str, Any], names: list[str], width: int) -> list[str]:
    """The metric rows of the summary table (labels `width` wide): each policy's mean ± standard
    error, then the difference with its interval."""
    metrics = list(result.get("policy_metrics") or {})
    lines = []
    for metric in metrics:
        cells = ""
        for name in names:
            stat = (result.get(name + "_metrics") or {}).get(metric) or {}
            mean, se = stat.get("mean"), stat.get("stderr")
            cell = "-" if mean is None else f"{mean:.3f}" + (f" ± {se:.3f}" if se is not None else "")
            cells += f"{cell:>22}"
        diff = (result.get("metric_differences") or {}).get(metric)
        if diff and diff.get("mean") is not None:
            cells += f"   difference {diff['mean']:+.3f}"
            if diff.get("low") is not None:
                cells += f" (95% CI {diff['low']:+.3f} to {diff['high']:+.3f})"
        lines.append(f"{metric:<{width}}{cells}")
    return lines
