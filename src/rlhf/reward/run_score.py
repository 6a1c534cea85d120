"""`rlhf score`: add a reward model's score to every completion of a file.

Each output line is the input row, as rlhf read it, with the rewards added:

    prompt/completion, ratings, labels   {"prompt", "completion", ("rating" | "label"), "reward"}
    candidates (from `rlhf generate`)    {"prompt", "completions", "rewards", "best"}
    comparisons                          {"prompt", "chosen", "rejected", "reward_chosen", "reward_rejected"}
    rankings                             {"prompt", "completions", "ranks", "rewards"}

plus `source` (file:line of the row) and the row's other fields (ids and the like) unchanged.
`best` is the index of the highest-scored candidate. For comparisons and rankings the summary
also says how often the model agrees with the file's judgments (pairwise accuracy, ties left out).
"""

from __future__ import annotations

import time
from typing import Any

from rlhf.config.core import ConfigError
from rlhf.data.records import Candidates, Comparison, Label, Ranking, Rating
from rlhf.reward.config import ScoreConfig


def completions_of(record) -> list[str]:
    """The completions of a record that get a reward, in output order."""
    if isinstance(record, Comparison):
        return [record.chosen, record.rejected]
    if isinstance(record, (Ranking, Candidates)):
        return list(record.completions)
    return [record.completion]


def scored_row(record, rewards: list[float]) -> dict[str, Any]:
    """One output line (see the module docstring)."""
    from rlhf.data.jsonl import prompt_to_json

    row: dict[str, Any] = {"prompt": prompt_to_json(record.prompt)}
    if isinstance(record, Comparison):
        row.update(chosen=record.chosen, rejected=record.rejected)
        if record.margin is not None:
            row["margin"] = record.margin
        row.update(reward_chosen=rewards[0], reward_rejected=rewards[1])
    elif isinstance(record, (Ranking, Candidates)):
        row["completions"] = list(record.completions)
        if isinstance(record, Ranking):
            row["ranks"] = list(record.ranks)
        row["rewards"] = rewards
        if isinstance(record, Candidates):
            row["best"] = max(range(len(rewards)), key=rewards.__getitem__)
    else:
        row["completion"] = record.completion
        if isinstance(record, Rating):
            row["rating"] = record.rating
        elif isinstance(record, Label):
            row["label"] = record.label
        row["reward"] = rewards[0]
    row["source"] = str(record.source)
    row.update((k, v) for k, v in record.meta.items() if k not in row)
    return row


def agreement(records: list, rewards: list[list[float]]) -> dict[str, Any] | None:
    """Pairwise accuracy of the rewards against the comparisons and rankings among `records`."""
    import torch

    from rlhf.losses.reward import ranking_pairs
    from rlhf.reward.metrics import pairwise_accuracy

    ranks = []
    flat: list[float] = []
    for record, scores in zip(records, rewards):
        if isinstance(record, Comparison):
            ranks.append([0.0, 1.0])
        elif isinstance(record, Ranking):
            ranks.append([float(r) for r in record.ranks])
        else:
            continue
        flat += scores
    if not ranks:
        return None
    pairs = ranking_pairs(ranks, ties="skip")
    accuracy = pairwise_accuracy(torch.tensor(flat), pairs)
    return {"pairs": len(pairs), "accuracy": accuracy}


def run_score(cfg: ScoreConfig) -> dict[str, Any]:
    """Score `cfg.data`, write `cfg.output`, print a one-line summary and return it as a dict."""
    import torch

    from rlhf.data import load_records
    from rlhf.files import write_jsonl_atomic
    from rlhf.reward.metrics import reward_stats

    started = time.time()
    if not cfg.reward.all_sources():
        raise ConfigError(
            "no reward given: set `reward.model` (`rlhf score --model DIR`), or a function or url"
        )
    if not cfg.data.path:
        raise ConfigError("nothing to score: set `data.path` (`rlhf score --data FILE`)")
    # The data first: a bad file fails in milliseconds, before the model loads.
    loaded = load_records(cfg.data, expect="score")
    records = loaded.records
    texts = [completions_of(record) for record in records]
    prompts = [record.prompt for record, group in zip(records, texts) for _ in group]
    flat, truncated, max_length = _scores(cfg, prompts, [c for group in texts for c in group])
    rewards, at = [], 0
    for group in texts:
        rewards.append(flat[at : at + len(group)])
        at += len(group)
    output = write_jsonl_atomic(cfg.output, [scored_row(r, s) for r, s in zip(records, rewards)])

    stats = reward_stats(torch.tensor(flat), bins=1) if flat else None
    summary: dict[str, Any] = {
        "records": len(records),
        "completions": len(flat),
        "kind": loaded.kind,
        "normalized": cfg.normalize,
        "reward_mean": stats["mean"] if stats else None,
        "reward_std": stats["std"] if stats else None,
        "reward_min": stats["min"] if stats else None,
        "reward_max": stats["max"] if stats else None,
        "truncated": truncated,
        "max_length": max_length,
        "rows_skipped": len(loaded.report.skipped),
        "seconds": round(time.time() - started, 1),
        "output": str(output),
    }
    agree = agreement(records, rewards)
    if agree is not None:
        summary.update(pairs=agree["pairs"], accuracy=agree["accuracy"])
    print(summary_line(summary, loaded.report.summary(with_path=False)))
    return summary


def _scores(cfg: ScoreConfig, prompts: list, completions: list[str]) -> tuple[list[float], int, int | None]:
    """(the score of every completion, how many were cut to fit, the token limit): by the reward
    model (`reward.model` alone: its own batching, `max_length`, saved statistics for `normalize`)
    or by any reward sources' raw weighted sum."""
    from rlhf.rewards.function import RawScorer
    from rlhf.rewards.scorer import RewardScorer

    model = cfg.reward.single_model()
    if model is None:
        if cfg.normalize or cfg.max_length is not None:
            raise ConfigError(
                "`normalize` and `max_length` apply to one reward model (`reward.model` alone), not to "
                "functions, endpoints or weighted sums"
            )
        return RawScorer(cfg.reward)(prompts, completions).rewards, 0, None
    reward = cfg.reward
    scorer = RewardScorer.load(
        model,
        batch_size=reward.batch_size,
        device=reward.device,
        dtype=reward.dtype,
        max_length=cfg.max_length,
    )
    if cfg.normalize and scorer.stats is None:
        raise ConfigError(
            f"`normalize: true` needs the reward statistics saved by `rlhf reward`; {model} has none"
        )
    flat = scorer.score(prompts, completions, progress=cfg.progress)
    return (scorer.normalize(flat) if cfg.normalize else flat), scorer.truncated, scorer.max_length


def summary_line(summary: dict[str, Any], load_report: str) -> str:
    text = (
        f"rlhf score: {load_report}; scored {summary['completions']} completions of "
        f"{summary['records']} {summary['kind']} records"
    )
    if summary["completions"]:
        what = "normalized reward" if summary["normalized"] else "reward"
        text += (
            f"; {what} mean {summary['reward_mean']:.4f}, std {summary['reward_std']:.4f}, "
            f"range [{summary['reward_min']:.4f}, {summary['reward_max']:.4f}]"
        )
    if summary.get("accuracy") is not None:
        text += f"; agrees with the file on {summary['accuracy']:.3f} of {summary['pairs']} pairs"
    if summary["truncated"]:
        text += f"; {summary['truncated']} cut to fit {summary['max_length']} tokens"
    return text + f"; wrote {summary['output']} in {summary['seconds']} s"
