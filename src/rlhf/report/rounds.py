"""The report of a run in rounds (`rlhf pipeline` with `rounds`): `<output_dir>/report.html`, the
rounds side by side, with each round's own report linked (`round_<r>/report.html`).

Per round: the labels collected and the labelers' agreement; the previous round's reward model
and the retrained one on this round's new held-out pairs (how blind the old one was to the new
policy's samples); the gold score, gold win rate over SFT and KL from SFT of the round's policy;
and the over-optimization picture across rounds, gold score against KL, one point per round.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from rlhf.data.jsonl import read_jsonl
from rlhf.report import plots
from rlhf.report.load import is_number
from rlhf.report.markup import esc, figure, missing, table

COLUMNS = [
    ("round", "round"), ("labels", "labels (judgments)"), ("train_pairs_all", "training pairs, all rounds"),
    ("selection", "pairs chosen by"), ("agreement", "labeler agreement"),
    ("rm_accuracy_new_before", "previous reward model on the new samples"),
    ("rm_accuracy_new_after", "retrained reward model on the new samples"),
    ("gold_policy", "gold score"), ("win_rate_gold", "gold win rate over SFT"), ("kl", "KL from SFT"),
]  # fmt: skip


def rounds_section(run: Path, rows: list[dict[str, Any]]) -> str:
    """The rounds table, the over-optimization figures and links to each round's report."""
    if not rows:
        return missing("No round has finished yet.")
    body = [[row.get(key) for key, _ in COLUMNS] for row in rows]
    parts = [
        table([title for _, title in COLUMNS], body),
        '<p class="note">Reward-model accuracies are on each round\'s own held-out pairs of new samples, '
        "judged by gold; the previous model's is how blind it was to the policy it was about to train.</p>",
    ]
    points = [(f"round {r['round']}", r["kl"], r["gold_policy"]) for r in rows if is_number(r.get("kl"))]
    sft = next((r["gold_sft"] for r in rows if is_number(r.get("gold_sft"))), None)
    if points and all(is_number(g) for _, _, g in points):
        parts.append(figure(_gold_against_kl(points, sft), "gold score against KL, by round",
                            "Each round's policy: its gold score against its KL from the SFT model (the SFT "
                            "model at KL 0). Gold that keeps rising with KL is improvement; gold that falls "
                            "while KL grows is over-optimization."))  # fmt: skip
    trace = _training_trace(run, len(rows))
    if trace:
        uri = plots.overoptimization_figure(trace, "ppo/reward/gold", "ppo/reward/raw")
        parts.append(figure(uri, "over-optimization across rounds",
                            "PPO training of every round in sequence (steps counted across rounds): gold "
                            "score and reward-model reward against KL from the SFT model. Each round's "
                            "reward is its own reward model's."))  # fmt: skip
    return "\n".join(parts)


def _training_trace(run: Path, rounds: int) -> list[dict[str, Any]]:
    """Every round's PPO metrics in order, steps counted on across rounds; [] unless each has gold."""
    trace: list[dict[str, Any]] = []
    offset = 0
    for r in range(rounds):
        logged = read_jsonl(run / f"round_{r}" / "ppo" / "metrics.jsonl") or []
        rows = [row for row in logged if "ppo/kl" in row]
        if not rows or not all(is_number(row.get("ppo/reward/gold")) for row in rows):
            return []
        trace += [{**row, "step": offset + row.get("step", 0)} for row in rows]
        offset = trace[-1]["step"]
    return trace


def _gold_against_kl(points: list[tuple[str, float, float]], sft: float | None) -> str:
    fig = plots.new_figure(6.5, 4.0)
    ax = fig.subplots()
    xs, ys = [0.0] + [kl for _, kl, _ in points], [sft] + [g for _, _, g in points]
    if sft is None:
        xs, ys = xs[1:], ys[1:]
    ax.plot(xs, ys, color="grey", linewidth=1)
    ax.scatter(
        [kl for _, kl, _ in points], [g for _, _, g in points], c=range(len(points)), cmap="viridis", zorder=3
    )
    for label, kl, gold in points:
        ax.annotate(label, (kl, gold), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if sft is not None:
        ax.scatter([0.0], [sft], color="black", marker="s", zorder=3)
        ax.annotate("SFT", (0.0, sft), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("KL from the SFT model (nats per answer)", fontsize=9)
    ax.set_ylabel("gold score (mean)", fontsize=9)
    ax.grid(alpha=0.3)
    return plots.to_data_uri(fig)


def write_rounds_report(run: Path, rows: list[dict[str, Any]]) -> Path:
    """Write `<run>/report.html` for a run in rounds; returns its path."""
    from rlhf.report.page import STYLE

    links = "".join(
        f'<li><a href="round_{r["round"]}/report.html">round {r["round"]}</a></li>'
        for r in rows
        if (run / f"round_{r['round']}" / "report.html").is_file()
    )
    written = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>rlhf report: {esc(run.resolve().name)} ({len(rows)} rounds)</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<header>
<h1>RLHF in rounds</h1>
<p class="meta">Run directory <code>{esc(str(run.resolve()))}</code>, report written {esc(written)}.</p>
</header>
<section id="rounds">
<h2>Rounds</h2>
{rounds_section(run, rows)}
<h3>Each round's report</h3>
<ul>{links}</ul>
</section>
</main>
</body>
</html>
"""
    path = run / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
