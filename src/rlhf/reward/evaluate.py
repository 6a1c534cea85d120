"""`rlhf eval reward`: how well a reward model agrees with held-out human feedback.

The same metrics `rlhf reward` logs during training, for any saved reward model and any feedback
file: pairwise accuracy, accuracy per ranking position, mean margin, calibration of σ(Δr), and the
reward distribution. Comparisons and rankings are read as pairs (every pair of a ranking, as in
training); ratings as pairs of the ratings of one prompt; labels pointwise (is the reward's sign
the label?).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rlhf.config.core import ConfigError
from rlhf.files import write_json_atomic
from rlhf.reward.config import EvalRewardConfig

EVAL_LOSS = {"comparison": "pairwise", "ranking": "pairwise", "rating": "rating_pairs", "label": "label"}
"""How each kind of feedback is judged (the loss whose metrics are reported)."""


def run_eval_reward(cfg: EvalRewardConfig) -> dict[str, Any]:
    """Score `cfg.data` with the reward model `cfg.reward.model`; print a short table and return (and
    maybe write) the metrics."""
    from rlhf.data import load_records
    from rlhf.preference.groups import build_groups, label_targets, loss_mode
    from rlhf.reward.train import reward_metrics
    from rlhf.rewards.scorer import RewardScorer

    started = time.time()
    model = cfg.reward.single_model()
    if model is None:
        raise ConfigError(
            "`rlhf eval reward` evaluates one reward model: set `reward.model` (`--model DIR`); for a "
            "function or endpoint, `rlhf score` reports its agreement with the file's judgments"
        )
    if not cfg.data.path:
        raise ConfigError("no feedback given: set `data.path` (`rlhf eval reward --data FILE`)")
    loaded = load_records(cfg.data, expect="reward")
    loss = EVAL_LOSS[loaded.kind]
    scorer = RewardScorer.load(
        model,
        batch_size=cfg.reward.batch_size,
        device=cfg.reward.device,
        dtype=cfg.reward.dtype,
        max_length=cfg.max_length,
    )
    extra = scorer.model.extra
    labels = label_targets(extra.get("positive_labels"), extra.get("negative_labels"))
    scale = loaded.rating_scale
    groups, stats = build_groups(
        loaded.records, loss, scorer.renderer, scorer.tokenizer, max_length=scorer.max_length,
        max_prompt_length=scorer.max_prompt_length, rating_scale=scale, labels=labels,
    )  # fmt: skip
    if not groups:
        raise ConfigError(f"{cfg.data.path}: no records to evaluate")
    flat = scorer.score_ids([seq for g in groups for seq in g.input_ids], progress=cfg.progress)
    scores, at = [], 0
    for group in groups:
        scores.append(flat[at : at + len(group.input_ids)])
        at += len(group.input_ids)
    metrics = reward_metrics(groups, scores, loss_mode(loss), cfg.ties, cfg.bins)
    result = {
        "model": model,
        "data": cfg.data.path,
        "kind": loaded.kind,
        "records": len(loaded.records),
        "truncated": stats.truncated,
        "rows_skipped": len(loaded.report.skipped),
        **metrics,
        "seconds": round(time.time() - started, 1),
    }
    if cfg.output:
        write_json_atomic(Path(cfg.output), result)
    print(report(result, loaded.report.summary(with_path=False)))
    return result


def report(result: dict[str, Any], load_report: str) -> str:
    """The metrics as a few readable lines."""
    lines = [f"rlhf eval reward: {result['model']} on {result['data']} ({load_report})"]
    rows: list[tuple[str, str]] = []
    if result.get("pairs") is not None:
        rows.append(("pairs", str(result["pairs"])))
    for key, name in (("accuracy", "accuracy"), ("margin", "mean margin"), ("ece", "calibration error"),
                      ("loss", "loss")):  # fmt: skip
        if result.get(key) is not None:
            rows.append((name, f"{result[key]:.4f}"))
    for row in result.get("accuracy_by_position") or []:
        place = f"accuracy, better one ranked #{row['position'] + 1}"
        rows.append((place, f"{row['accuracy']:.4f} ({row['pairs']} pairs)"))
    rewards = result["rewards"]
    rows.append(("reward mean / std", f"{rewards['mean']:.4f} / {rewards['std']:.4f}"))
    rows.append(("reward min / max", f"{rewards['min']:.4f} / {rewards['max']:.4f}"))
    if result["truncated"]:
        rows.append(("records cut to fit", str(result["truncated"])))
    width = max(len(name) for name, _ in rows)
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    table = result.get("calibration")
    if table:
        lines.append("  calibration (model's P(right) -> observed, pairs):")
        for b in table["bins"]:
            if b["count"]:
                lines.append(f"    {b['predicted']:.3f} -> {b['observed']:.3f}  ({b['count']})")
    return "\n".join(lines)
