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
    metrics = list(dict.fromkeys(m for p in policies.values() for m in (p.get("metrics") or {})))
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
            [p.get("label"), *[mean_stderr(scores.get(j)) for j in judges],
             *[mean_stderr((p.get("metrics") or {}).get(m)) for m in metrics], kl, p.get("samples_per_answer"),
             fmt(compute.get("seconds")), "yes" if compute.get("uses_reward_model") else "no"]
        )  # fmt: skip
    headers = ["policy", *[f"{j} score" for j in judges], *metrics, "KL from SFT", "samples per answer",
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


def tax_section(run: RunData) -> str:
    """Each method's gain over SFT against what it lost on held-out text and benchmark tasks."""
    from rlhf.eval.compare import LABELS

    rows_data = (run.tax or {}).get("rows") or []
    if not rows_data:
        return missing(
            "Not measured: set <code>tax.texts</code> (held-out text no stage trains on) or "
            "<code>tax.tasks</code> (lm-evaluation-harness tasks) in the pipeline config."
        )
    columns = list(dict.fromkeys(c for r in rows_data for c in r.get("changes") or {}))

    def signed(value: Any) -> str:
        return f"{value:+.3f}" if is_number(value) else "-"

    rows = [
        [
            LABELS.get(r["method"], r["method"]),
            signed(r.get("gold_gain")),
            signed(r.get("reward_gain")),
            *[signed((r.get("changes") or {}).get(c)) for c in columns],
        ]
        for r in rows_data
    ]
    losses = (run.tax or {}).get("policies", {}).get("sft", {}).get("lm_loss") or {}
    sft_losses = "; ".join(f"{esc(path)}: {fmt(v.get('loss'))} nats/token" for path, v in losses.items())
    return "\n".join(
        [
            "<p>What each policy gained on the task (mean gold and reward score minus SFT's) against what it "
            "lost elsewhere: the change of its language-modelling loss on held-out text no stage trained on "
            "(a rise is a cost) and of each benchmark task's score (a fall is a cost). InstructGPT calls "
            "this the alignment tax; PPO-ptx (<code>ppo.ptx_coef</code>) is meant to lower it.</p>",
            table(["policy", "gold gain", "reward gain", *[f"Δ {c}" for c in columns]], rows),
            f'<p class="note">SFT\'s own held-out loss: {sft_losses}.</p>' if sft_losses else "",
        ]
    )
