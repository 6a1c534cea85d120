"""`feedback.source: judge`: an LLM judge labels the pairs of candidates instead of people.

The same pairs people or simulated labelers would judge (every pair of distinct, non-empty
candidates of a prompt, or those `feedback.select` picks; the held-out prompts' pairs all) go to the
judge in one batch (`rlhf.judge`, both orders asked). A pair it prefers one answer of becomes a
comparison row; a tie (its own, or a different verdict in each order) and an abstention are left
out and counted. With a `gold` function, the judge's agreement with it on pairs gold tells apart is
measured, and the held-out pairs also get gold's labels (`heldout_gold.jsonl`), as with simulated
labelers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf.data.errors import DataError
from rlhf.files import write_jsonl_atomic
from rlhf.pipeline.feedback import (
    HELDOUT_FILE,
    HELDOUT_GOLD_FILE,
    TRAIN_FILE,
    GoldFn,
    Selection,
    gold_scores,
    heldout_prompts,
    pair_row,
    pairs_to_judge,
    prompt_key,
    read_jsonl,
    selected_pairs,
    write_stats,
)


def judge_pairs(
    candidates_path: str | Path,
    judge_cfg: Any,
    out_dir: str | Path,
    *,
    gold: GoldFn | None = None,
    heldout_fraction: float = 0.15,
    seed: int = 0,
    selection: Selection | None = None,
) -> dict[str, Any]:
    """Write the judge's train and held-out pairs and `feedback.json`; return the statistics."""
    from rlhf.judge import PairwiseJudge, verdict_counts

    rows = read_jsonl(candidates_path)
    out_dir = Path(out_dir)
    held = heldout_prompts([prompt_key(r.get("prompt")) for r in rows], heldout_fraction, seed)
    allowed, selected = selected_pairs(rows, held, selection, seed, str(candidates_path))
    found, dropped = pairs_to_judge(rows, held, allowed, str(candidates_path))
    pairs = [{"prompt": p["prompt"], "a": p["completions"][p["a"]], "b": p["completions"][p["b"]], "held": p["held"]}
             for p in found]  # fmt: skip
    if not pairs:
        raise DataError(
            str(candidates_path), None, None, "no pair of distinct, non-empty candidates to judge"
        )
    judge = PairwiseJudge(judge_cfg)
    try:
        verdicts = judge.compare(
            [p["prompt"] for p in pairs], [p["a"] for p in pairs], [p["b"] for p in pairs]
        )
        sent = judge.client.sent
    finally:
        judge.close()
    train: list[dict[str, Any]] = []
    heldout: list[dict[str, Any]] = []
    heldout_gold: list[dict[str, Any]] = []
    agree = decided_by_gold = 0
    for pair, verdict in zip(pairs, verdicts):
        prompt, a, b = pair["prompt"], pair["a"], pair["b"]
        scores = gold_scores(gold, prompt, [a, b]) if gold is not None else None
        if verdict.winner in ("a", "b"):
            chosen, rejected = (a, b) if verdict.winner == "a" else (b, a)
            (heldout if pair["held"] else train).append(pair_row(prompt, chosen, rejected))
            if scores is not None and scores[0] != scores[1]:
                decided_by_gold += 1
                agree += (verdict.winner == "a") == (scores[0] > scores[1])
        if pair["held"] and scores is not None and scores[0] != scores[1]:
            win = 0 if scores[0] > scores[1] else 1
            heldout_gold.append(pair_row(prompt, (a, b)[win], (a, b)[1 - win]))
    if not train:
        raise DataError(
            str(candidates_path),
            None,
            None,
            f"the judge preferred an answer in no training pair ({verdict_counts(verdicts)})",
        )
    write_jsonl_atomic(out_dir / TRAIN_FILE, train)
    write_jsonl_atomic(out_dir / HELDOUT_FILE, heldout)
    write_jsonl_atomic(out_dir / HELDOUT_GOLD_FILE, heldout_gold)
    stats = {
        "source": "judge", "judge": judge_cfg.label, "prompts": len(rows), "heldout_prompts": len(held),
        "pairs": len(pairs), "judgments": len(pairs), "verdicts": verdict_counts(verdicts), "requests_sent": sent,
        "train_rows": len(train), "heldout_rows": len(heldout), "heldout_gold_rows": len(heldout_gold),
        "dropped": dropped, "judge_gold_accuracy": agree / decided_by_gold if decided_by_gold else None,
        "selection": selected,
    }  # fmt: skip
    write_stats(out_dir, stats)
    return stats
