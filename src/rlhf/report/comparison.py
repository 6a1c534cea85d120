"""The report's comparison section: every method of the run (PPO, DPO, RRHF, best-of-N, rejection
sampling) next to SFT on the same held-out prompts, from `eval/comparison.json`."""

from __future__ import annotations

from typing import Any

from rlhf.report import plots
from rlhf.report.load import RunData, is_number
from rlhf.report.markup import esc, figure, fmt, mean_stderr, missing, percent, table


def comparison_section(run: RunData) -> str:
    result = run.comparison
    if result is None:
        return missing(
            "This run evaluated one method (no <code>eval/comparison.json</code>); list several in "
            "<code>methods</code> to compare them here."
        )
    policies: dict[str, Any] = result.get("policies") or {}
    if not policies:
        return missing("<code>eval/comparison.json</code> holds no policies.")
    judges = sorted({j for p in policies.values() for j in (p.get("scores") or {})})
    parts = [
        "<p>Every policy answered the same held-out prompts; win rates are prompt by prompt, a tie "
        "counts half. KL is measured on each policy's own samples against the SFT model; best-of-N's "
        "is the analytic log N - (N-1)/N (marked *).</p>"
    ]
    rows = []
    for p in policies.values():
        compute = p.get("compute") or {}
        kl = fmt(p.get("kl")) + ("*" if p.get("kl_kind") == "analytic" else "")
        scores = p.get("scores") or {}
        rows.append(
            [p.get("label"), *[mean_stderr(scores.get(j)) for j in judges], kl, p.get("samples_per_answer"),
             fmt(compute.get("seconds")), "yes" if compute.get("uses_reward_model") else "no"]
        )  # fmt: skip
    headers = ["policy", *[f"{j} score" for j in judges], "KL from SFT", "samples per answer",
               "stage seconds", "needs the reward model"]  # fmt: skip
    parts.append("<h3>Scores, KL and compute</h3>")
    parts.append(table(headers, rows))
    names = list(policies)
    for judge, matrix in (result.get("win_rates") or {}).items():
        rows = [
            [policies[a].get("label"), *["" if a == b else percent(((matrix.get(a) or {}).get(b) or {}).get("rate"))
                                         for b in names]]
            for a in names
        ]  # fmt: skip
        parts.append(f"<h3>Win rates by {esc(judge)} (row policy against column policy)</h3>")
        parts.append(table(["", *[policies[b].get("label") for b in names]], rows))
    points = {
        judge: [
            (p.get("label"), p["kl"], p["scores"][judge]["mean"], p["scores"][judge].get("stderr"))
            for p in policies.values()
            if is_number(p.get("kl")) and is_number(((p.get("scores") or {}).get(judge) or {}).get("mean"))
        ]
        for judge in judges
    }
    points = {j: v for j, v in points.items() if v}
    if points:
        parts.append(
            figure(
                plots.methods_figure(points),
                "score against KL for every method",
                "Each method's mean score against its KL from the SFT model: up and to the left is better.",
            )  # fmt: skip
        )
    return "\n".join(parts)
