"""AI feedback against people's on the demo: PPO trained on an LLM judge's labels (the simulated judge
of `rlhf.demo.judge`: the gold rule, wrong on a `--flip` share of pairs) against PPO trained on the
same number of simulated people's labels (one labeler per pair) and on the demo's default (three
labelers per pair, their majority: three times the labels).

    .venv/bin/python bench/judge_feedback.py --seeds 0 1 --flip 0.2 --out runs/bench-judge

Each seed runs the demo with PPO only in `<out>/seed-<s>`, once per feedback source: SFT and the
candidates are made once and reused, the feedback, reward model, PPO and evaluation rerun. Prints
each run's gold win rate over SFT (with its 95% interval), gold score, KL, how often the labels
agree with gold, and the reward model's accuracy on the held-out pairs gold decides; writes
`<out>/judge_feedback.json`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from common import demo_seeds_parser

from rlhf.config.core import load_config
from rlhf.demo import DemoConfig, run_demo

SOURCES = {
    "judge": ["ai_feedback=true"],
    "people_1": ["pipeline.feedback.labelers=1"],
    "people_3": ["pipeline.feedback.labelers=3"],
}
LABELS = {
    "judge": "judge (1 verdict/pair)",
    "people_1": "people, 1 per pair",
    "people_3": "people, 3 per pair",
}


def one_run(seed: int, source: str, out: Path, flip: float) -> dict[str, Any]:
    run = out / f"seed-{seed}"
    sets = [f"pipeline.output_dir={run}", f"task.seed={seed}", "pipeline.methods=[ppo]", f"judge_flip={flip}"]
    summary = run_demo(load_config(DemoConfig, None, [*sets, *SOURCES[source]]))
    head = summary["headline"]
    feedback = json.loads((run / "feedback" / "feedback.json").read_text(encoding="utf-8"))
    label_gold = feedback.get("judge_gold_accuracy", head.get("labeler_gold_accuracy"))
    return {
        "win_rate_gold": head["win_rate_gold"], "win_rate_gold_ci": head["win_rate_gold_ci"],
        "gold_sft": head["gold_sft"], "gold_policy": head["gold_policy"], "kl": head["kl"],
        "label_gold_accuracy": label_gold, "reward_model_accuracy": head.get("reward_model_accuracy"),
        "train_rows": feedback.get("train_rows", feedback.get("train_pairs")),
    }  # fmt: skip


def table(per_seed: dict[int, dict[str, dict]]) -> str:
    lines = [
        f"{'labels':<24} {'seed':>4} {'gold win':>9} {'95% CI':>15} {'gold':>6} {'KL':>6} "
        f"{'labels=gold':>11} {'RM acc':>7} {'rows':>6}"
    ]
    for source, label in LABELS.items():
        for seed, runs in per_seed.items():
            r = runs[source]
            ci = f"[{r['win_rate_gold_ci'][0]:.3f}, {r['win_rate_gold_ci'][1]:.3f}]"
            lines.append(
                f"{label:<24} {seed:>4} {r['win_rate_gold']:>9.3f} {ci:>15} {r['gold_policy']:>6.3f} "
                f"{r['kl']:>6.2f} {_num(r['label_gold_accuracy']):>11} {_num(r['reward_model_accuracy']):>7} "
                f"{r['train_rows'] or '-':>6}"
            )
        mean = statistics.fmean(runs[source]["win_rate_gold"] for runs in per_seed.values())
        lines.append(f"{label:<24} {'mean':>4} {mean:>9.3f}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = demo_seeds_parser(__doc__, "runs/bench-judge")
    parser.add_argument("--flip", type=float, default=0.2)
    args = parser.parse_args()
    per_seed = {seed: {s: one_run(seed, s, args.out, args.flip) for s in SOURCES} for seed in args.seeds}
    print(
        f"\nPPO's gold win rate over SFT by the labels it learned from (judge wrong on {args.flip:.0%} of pairs):"
    )
    print(table(per_seed))
    result = {"seeds": args.seeds, "flip": args.flip, "per_seed": per_seed}
    (args.out / "judge_feedback.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
