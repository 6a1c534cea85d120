"""The side-by-side comparison of the pipeline's methods (PPO, DPO, RRHF, best-of-N, rejection
sampling) on the same held-out prompts: plain Python over the evaluation files, no torch.

The first method is evaluated against the SFT policy in `eval/` (`eval.json`, `samples.jsonl`:
policy and baseline answers); every other method answers the same prompts in `eval/<method>/`.
Scores are per prompt, so every pair of policies gets a win rate prompt by prompt, and each method
its mean gold and reward score, its KL from the SFT model, and the compute it spent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhf.eval.metrics import mean_stat, win_rate
from rlhf.files import read_json_dict

COMPARISON_FILE = "comparison.json"
LABELS = {
    "sft": "SFT",
    "ppo": "PPO",
    "dpo": "DPO",
    "rrhf": "RRHF",
    "best_of_n": "best-of-N",
    "rejection_sampling": "rejection sampling",
}


def _read_rows(path: Path) -> list[dict[str, Any]]:
    from rlhf.data.jsonl import read_jsonl

    return read_jsonl(path) or []


def method_dir(eval_dir: Path, name: str, first: str) -> Path:
    """Where a method's evaluation lives: the first method in `eval/` itself, the others below it."""
    return eval_dir if name == first else eval_dir / name


def per_prompt_scores(
    eval_dir: Path, methods: list[str], what: str = "scores"
) -> dict[str, dict[str, list[float]]]:
    """name -> judge -> scores in prompt order, for `sft` and every method that has its samples;
    `what="metrics"`: the metric columns instead (ROUGE, classifier metrics; prompts without a value
    left out)."""
    first = methods[0]
    columns = [(eval_dir, "policy", first), (eval_dir, "baseline", "sft")]
    columns += [(eval_dir / name, "policy", name) for name in methods[1:]]
    scores: dict[str, dict[str, list[float]]] = {}
    for directory, column, name in columns:
        raw = [r.get(f"{column}_{what}") for r in _read_rows(directory / "samples.jsonl")]
        found = [f for f in raw if isinstance(f, dict)]
        if found and len(found) == len(raw):
            judges = set.intersection(*(set(f) for f in found))
            scores[name] = {j: [float(f[j]) for f in found if f[j] is not None] for j in sorted(judges)}
    return scores


def compare(
    eval_dir: Path, methods: list[str], compute: dict[str, dict[str, Any]], tie_tolerance: float = 0.0
) -> dict[str, Any]:
    """The comparison: per policy its scores, KL and compute; per pair of policies the win rate."""
    first = methods[0]
    scores = per_prompt_scores(eval_dir, methods)
    metrics = per_prompt_scores(eval_dir, methods, "metrics")
    names = [n for n in ("sft", *methods) if n in scores]
    out: dict[str, Any] = {"methods": methods, "policies": {}, "win_rates": {}}
    for name in names:
        result = read_json_dict(method_dir(eval_dir, name, first) / "eval.json") if name != "sft" else {}
        kl = result.get("kl") or {}
        entry: dict[str, Any] = {
            "label": LABELS.get(name, name),
            "scores": {j: mean_stat(v).as_dict() for j, v in scores[name].items()},
            "metrics": {m: mean_stat(v).as_dict() for m, v in metrics.get(name, {}).items()},
            "kl": (kl.get("sequence") or {}).get("mean") if name != "sft" else 0.0,
            "kl_stderr": (kl.get("sequence") or {}).get("stderr") if name != "sft" else None,
            "kl_kind": ("analytic" if kl.get("analytic") else "sampled") if name != "sft" else None,
            "samples_per_answer": result.get("best_of", 1) if name != "sft" else 1,
            "compute": compute.get(name, {}),
        }
        out["policies"][name] = entry
    judges = sorted(set.intersection(*(set(scores[n]) for n in names))) if names else []
    for judge in judges:
        table: dict[str, dict[str, Any]] = {}
        for a in names:
            for b in names:
                if a != b:
                    w = win_rate(scores[a][judge], scores[b][judge], tie_tolerance=tie_tolerance)
                    table.setdefault(a, {})[b] = w.as_dict()
        out["win_rates"][judge] = table
    out["headline"] = "gold" if "gold" in judges else ("reward" if "reward" in judges else None)
    return out


def write_comparison(eval_dir: Path, methods: list[str], compute: dict[str, dict[str, Any]]) -> dict:
    result = compare(eval_dir, methods, compute)
    (eval_dir / COMPARISON_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def comparison_table(result: dict[str, Any]) -> str:
    """One column per policy: mean gold and reward score, KL from SFT, win rate over SFT, seconds."""
    policies = result.get("policies") or {}
    names = list(policies)
    if len(names) < 2:
        return ""
    widths = {n: max(6, len(policies[n]["label"])) + 2 for n in names}
    lines = [f"{'':28}" + "".join(f"{policies[n]['label']:>{widths[n]}}" for n in names)]

    def row(title: str, cell) -> None:
        lines.append(f"{title:28}" + "".join(f"{cell(n):>{widths[n]}}" for n in names))

    def number(value, fmt="{:.3f}") -> str:
        return fmt.format(value) if isinstance(value, int | float) else "-"

    for judge in ("gold", "reward"):
        if any(judge in policies[n]["scores"] for n in names):
            row(
                f"{judge} score (mean)",
                lambda n, j=judge: number((policies[n]["scores"].get(j) or {}).get("mean")),
            )
    for judge, table in (result.get("win_rates") or {}).items():
        row(
            f"win rate over SFT, by {judge}",
            lambda n, t=table: "" if n == "sft" else number(((t.get(n) or {}).get("sft") or {}).get("rate")),
        )
    for metric in dict.fromkeys(m for n in names for m in policies[n].get("metrics") or {}):
        row(metric, lambda n, m=metric: number(((policies[n].get("metrics") or {}).get(m) or {}).get("mean")))
    row(
        "KL from SFT (nats/answer)",
        lambda n: number(policies[n]["kl"]) + ("*" if policies[n].get("kl_kind") == "analytic" else ""),
    )
    row("samples per answer", lambda n: str(policies[n]["samples_per_answer"]))
    row("stage seconds", lambda n: number(policies[n]["compute"].get("seconds"), "{:.0f}"))
    if any(policies[n].get("kl_kind") == "analytic" for n in names):
        lines.append("* best-of-N: the analytic KL log N - (N-1)/N")
    return "\n".join(lines)
