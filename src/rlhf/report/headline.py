"""A pipeline run's headline: the numbers that say whether RLHF worked, as data and as a short table.

Plain Python (no torch): `rlhf pipeline`, `rlhf demo` and the report print it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf.files import read_json_dict


def headline(run: Path) -> dict[str, Any]:
    """The numbers that say whether RLHF worked: SFT vs the policy, the reward model, the labelers."""
    ev = read_json_dict(run / "eval" / "eval.json")
    comparison = read_json_dict(run / "eval" / "comparison.json")
    fb = read_json_dict(run / "feedback" / "feedback.json")
    rm = read_json_dict(run / "reward_eval" / "eval.json")
    out: dict[str, Any] = {}
    for name in ("gold", "reward"):
        pol = ev.get("policy_scores", {}).get(name)
        base = ev.get("baseline_scores", {}).get(name)
        if pol and base:
            out[f"{name}_sft"] = base["mean"]
            out[f"{name}_policy"] = pol["mean"]
        win = ev.get("win_rate", {}).get(name)
        if win:
            out[f"win_rate_{name}"] = win["rate"]
            out[f"win_rate_{name}_ci"] = [win.get("low"), win.get("high")]
    for metric, diff in (ev.get("metric_differences") or {}).items():
        before = (ev.get("baseline_metrics") or {}).get(metric) or {}
        after = (ev.get("policy_metrics") or {}).get(metric) or {}
        out.setdefault("metrics", {})[metric] = {
            "sft": before.get("mean"),
            "policy": after.get("mean"),
            "difference": diff.get("mean"),
            "ci": [diff.get("low"), diff.get("high")],
        }
    kl = ev.get("kl", {}).get("sequence")
    if kl:
        out["kl"] = kl["mean"]
        out["kl_stderr"] = kl.get("stderr")
    if "accuracy" in rm:
        out["reward_model_accuracy"] = rm["accuracy"]
        out["reward_model_accuracy_data"] = rm.get("data")
    for key in ("raw_agreement", "krippendorff_alpha", "labeler_gold_accuracy"):
        if fb.get(key) is not None:
            out[f"labeler_{key}" if not key.startswith("labeler") else key] = fb[key]
    methods = comparison.get("methods") or []
    if methods:
        from rlhf.eval.compare import LABELS

        out["method"] = LABELS.get(methods[0], methods[0])
    if len(methods) > 1:
        out["comparison"] = comparison
    tax = read_json_dict(run / "eval" / "tax.json")
    if tax.get("rows"):
        out["alignment_tax"] = tax["rows"]
    flags = overoptimization(run, ev, comparison)
    if flags:
        out["overoptimization"] = flags
    return out


def overoptimization(run: Path, ev: dict[str, Any], comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """Every sign of over-optimization the run shows, each with its one line: a policy whose win rate
    over SFT by the reward model exceeds its win rate by gold (or the LLM judge) by more than the
    evaluation's `overoptimization_gap`, and a PPO monitor that peaked and fell while the reward rose."""
    from rlhf.eval.compare import LABELS
    from rlhf.training.overoptimization import GAP, gap_line, reward_gap, turn_line

    threshold = (ev.get("overoptimization") or {}).get("threshold", GAP)
    rates = comparison.get("win_rates") or {}
    gaps: dict[str, dict[str, Any]] = {}
    for policy in comparison.get("methods") or []:
        by_judge = {
            j: (rates.get(j) or {}).get(policy, {}).get("sft") or {} for j in ("reward", "gold", "judge")
        }
        entry = reward_gap(by_judge, threshold)
        if entry is not None:
            gaps[policy] = entry
    if not gaps and ev.get("overoptimization"):
        gaps[comparison.get("methods", ["ppo"])[0] if comparison.get("methods") else "policy"] = ev[
            "overoptimization"
        ]
    flags = []
    for policy, entry in gaps.items():
        line = gap_line(entry)
        if line:
            flags.append(
                {"policy": policy, "kind": "gap", **entry, "line": f"{LABELS.get(policy, policy)}: {line}"}
            )
    for entry in read_json_dict(run / "ppo" / "summary.json").get("overoptimization") or []:
        line = turn_line(entry)
        if line:
            flags.append({"policy": "ppo", "kind": "turn", **entry, "line": f"PPO training: {line}"})
    return flags


def headline_table(head: dict[str, Any]) -> str:
    """The short table `rlhf pipeline` and `rlhf demo` print at the end."""

    def num(key: str, fmt: str = "{:.3f}") -> str:
        value = head.get(key)
        return fmt.format(value) if isinstance(value, (int, float)) else "-"

    lines = [f"{'':28}{'SFT':>10}{head.get('method', 'PPO'):>10}"]
    for name in ("gold", "reward"):
        if f"{name}_sft" in head:
            lines.append(f"{name + ' score (mean)':28}{num(name + '_sft'):>10}{num(name + '_policy'):>10}")
    for name in ("gold", "reward"):
        if f"win_rate_{name}" in head:
            low, high = head.get(f"win_rate_{name}_ci") or (None, None)
            ci = f" (95% CI {low:.2f}-{high:.2f})" if low is not None and high is not None else ""
            lines.append(f"{'win rate over SFT, by ' + name:28}{'':>10}{num('win_rate_' + name):>10}{ci}")
    for metric, m in (head.get("metrics") or {}).items():
        low, high = m.get("ci") or (None, None)
        ci = f" (difference 95% CI {low:+.3f} to {high:+.3f})" if low is not None and high is not None else ""
        cells = [f"{v:.3f}" if isinstance(v, int | float) else "-" for v in (m.get("sft"), m.get("policy"))]
        lines.append(f"{metric + ' (mean)':28}{cells[0]:>10}{cells[1]:>10}{ci}")
    if "kl" in head:
        lines.append(f"{'KL from SFT (nats/answer)':28}{'':>10}{num('kl'):>10} ± {num('kl_stderr')}")
    if "reward_model_accuracy" in head:
        lines.append(
            f"reward model held-out accuracy: {num('reward_model_accuracy')} on {head.get('reward_model_accuracy_data')}"
        )
    if "labeler_raw_agreement" in head:
        lines.append(
            f"labeler agreement: {num('labeler_raw_agreement')} (Krippendorff's alpha "
            f"{num('labeler_krippendorff_alpha')}; a single labeler agrees with gold {num('labeler_gold_accuracy')})"
        )
    for flag in head.get("overoptimization") or []:
        lines.append(str(flag.get("line")))
    if isinstance(head.get("comparison"), dict):
        from rlhf.eval.compare import comparison_table

        lines += ["", "the methods side by side (same SFT model, feedback and held-out prompts):"]
        lines.append(comparison_table(head["comparison"]))
    if isinstance(head.get("alignment_tax"), list):
        from rlhf.eval.compare import LABELS
        from rlhf.eval.tax import tax_table

        lines += [
            "",
            "what alignment cost (each policy's gain and its held-out losses and tasks against SFT):",
        ]
        lines.append(tax_table(head["alignment_tax"], LABELS))
    return "\n".join(lines)
