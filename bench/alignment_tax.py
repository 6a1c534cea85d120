"""What alignment cost on the demo, and what PPO's pretraining mix (PPO-ptx) bought back: the README's
"alignment tax" table.

    .venv/bin/python bench/alignment_tax.py --seeds 0 1 --ptx-coef 1.0 --out runs/bench-tax

For each task seed: the demo with methods PPO and DPO in `<out>/seed-<s>` (its own settings
otherwise), whose evaluation measures the alignment tax (`eval/tax.json`: the held-out loss on the
held-out documents' demonstrations and on the documents as plain text, against each method's gold
and reward gain); then the same run with `ppo.loss.ptx_coef` set and the SFT demonstrations as
`ppo.loss.ptx_data`, for which the pipeline reruns only PPO, the evaluation and the report: PPO-ptx's
row. Prints each seed's rows and the mean over seeds, and writes `<out>/alignment_tax.json`.
The mix's weight is not tuned: 1.0 puts the language-modelling loss on the scale of the policy loss.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from common import demo_seeds_parser

from rlhf.config.core import load_config
from rlhf.demo import DemoConfig, run_demo
from rlhf.eval.tax import tax_table


def tax_rows(run: Path) -> dict[str, dict]:
    """method -> its row of the run's `eval/tax.json`."""
    return {row["method"]: row for row in json.loads((run / "eval" / "tax.json").read_text())["rows"]}


def one_seed(seed: int, out: Path, ptx_coef: float) -> dict[str, dict]:
    run = out / f"seed-{seed}"
    base = [f"pipeline.output_dir={run}", f"task.seed={seed}", "pipeline.methods=[ppo, dpo]"]
    run_demo(load_config(DemoConfig, None, base))
    rows = tax_rows(run)
    mixed = [
        *base,
        f"pipeline.ppo.loss.ptx_coef={ptx_coef}",
        f"pipeline.ppo.loss.ptx_data.path={run / 'data' / 'sft.jsonl'}",
    ]
    run_demo(load_config(DemoConfig, None, mixed))
    rows["ppo_ptx"] = {**tax_rows(run)["ppo"], "method": "ppo_ptx"}
    return {name: rows[name] for name in ("ppo", "ppo_ptx", "dpo")}


def mean_rows(per_seed: list[dict[str, dict]]) -> list[dict]:
    """Each method's row averaged over the seeds (a value missing on any seed: None)."""
    out = []
    for method in per_seed[0]:
        rows = [seed[method] for seed in per_seed]

        def mean(values: list) -> float | None:
            return None if any(v is None for v in values) else statistics.fmean(values)

        changes = {c: mean([r["changes"].get(c) for r in rows]) for c in rows[0]["changes"]}
        out.append({"method": method, "gold_gain": mean([r["gold_gain"] for r in rows]),
                    "reward_gain": mean([r["reward_gain"] for r in rows]), "changes": changes})  # fmt: skip
    return out


def main() -> None:
    parser = demo_seeds_parser(__doc__, "runs/bench-tax")
    parser.add_argument("--ptx-coef", type=float, default=1.0)
    args = parser.parse_args()
    labels = {"ppo": "PPO", "ppo_ptx": f"PPO-ptx ({args.ptx_coef:g})", "dpo": "DPO"}
    per_seed = [one_seed(seed, args.out, args.ptx_coef) for seed in args.seeds]
    for seed, rows in zip(args.seeds, per_seed):
        print(f"\nseed {seed}:\n{tax_table(list(rows.values()), labels)}")
    print(f"\nmean over seeds {', '.join(map(str, args.seeds))}:\n{tax_table(mean_rows(per_seed), labels)}")
    result = {
        "seeds": args.seeds,
        "ptx_coef": args.ptx_coef,
        "per_seed": per_seed,
        "mean": mean_rows(per_seed),
    }
    (args.out / "alignment_tax.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
