"""Online RLHF at an equal label budget, on the demo task: one round of feedback against three,
and pairs chosen at random against the pairs the previous round's reward model is least sure of.

    .venv/bin/python bench/rounds_experiment.py --seeds 3          # the README's table (about 1 h on 2 cores)
    .venv/bin/python bench/rounds_experiment.py --quick --seeds 1  # a smoke run of every arm (minutes)

For each task seed the demo's data and base model are written and SFT runs once; then each arm
runs `rlhf pipeline` from that SFT model with PPO (the demo's settings) and simulated labelers:

    1 round, random          `--labels` training pairs labeled at once, PPO `--ppo-steps` steps
    3 rounds, random         `--labels / 3` pairs a round, on a third of the candidate prompts each,
                             sampled from the round's policy; the reward model retrained on all
                             pairs so far; PPO `--ppo-steps / 3` steps a round from the last policy
    3 rounds, uncertainty    as above, the pairs whose preference the previous round's reward model
                             predicts closest to 1/2 (round 0 has no reward model: random)

So every arm has the same labels and the same PPO steps. Each arm's final policy is evaluated
against the SFT model on the demo's held-out documents: gold win rate and KL. The script prints
the mean ± standard deviation over seeds and every seed's figures, and writes them to
`<output>/results.json`. Finished stages are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from rlhf.demo import DemoConfig, DemoTaskConfig, demo_config_for_run, demo_pipeline
from rlhf.pipeline.config import STAGES
from rlhf.pipeline.run import run_pipeline

ARMS = {"1 round, random": (1, "random"), "3 rounds, random": (3, "random"),
        "3 rounds, uncertainty": (3, "uncertainty")}  # fmt: skip


def seed_base(seed: int, out: Path, quick: bool):
    """The demo's pipeline config for task seed `seed`, its data and base model written; SFT run."""
    task = DemoTaskConfig(seed=seed)
    pipeline = dataclasses.replace(
        demo_pipeline(), output_dir=str(out / f"seed-{seed}" / "sft"), methods=["ppo"]
    )
    if quick:
        task = dataclasses.replace(
            task, sft_examples=200, candidate_prompts=90, ppo_prompts=60, eval_prompts=30
        )
        pipeline = dataclasses.replace(
            pipeline, sft=dataclasses.replace(pipeline.sft, max_steps=60),
            reward=dataclasses.replace(pipeline.reward, max_steps=40),
        )  # fmt: skip
    base = demo_config_for_run(DemoConfig(task=task, pipeline=pipeline))
    run_pipeline(dataclasses.replace(base, stages=["sft"]), log=lambda _: None)
    return base


def run_arm(base, out: Path, rounds: int, rule: str, labels: int, ppo_steps: int) -> dict[str, Any]:
    """One arm from the seed's SFT model; the final round's headline."""
    cfg = dataclasses.replace(
        base,
        output_dir=str(out),
        sft_model=str(Path(base.output_dir) / "sft" / "model"),
        stages=[s for s in STAGES if s != "sft"],
        rounds=rounds,
        feedback=dataclasses.replace(base.feedback, select=rule, budget=labels // rounds),
        ppo=dataclasses.replace(base.ppo, max_steps=ppo_steps // rounds),
    )
    summary = run_pipeline(cfg, log=lambda line: print(f"    {line}", flush=True))
    head = summary["headline"]
    return {
        key: head.get(key)
        for key in ("gold_sft", "gold_policy", "win_rate_gold", "kl", "reward_model_accuracy")
    }


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="task seeds 0 .. N-1")
    parser.add_argument(
        "--labels", type=int, default=900, help="training pairs labeled in all (3 labelers each)"
    )
    parser.add_argument("--ppo-steps", type=int, default=60, help="PPO steps in all")
    parser.add_argument("--output", default="runs/rounds_experiment")
    parser.add_argument("--quick", action="store_true", help="a small task and short runs: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.labels, args.ppo_steps = min(args.labels, 60), min(args.ppo_steps, 6)
    out = Path(args.output)
    results: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in ARMS}
    for seed in range(args.seeds):
        print(f"[rounds] task seed {seed}: data, base model, SFT", flush=True)
        base = seed_base(seed, out, args.quick)
        for arm, (rounds, rule) in ARMS.items():
            print(f"[rounds] seed {seed}: {arm}", flush=True)
            where = out / f"seed-{seed}" / arm.replace(", ", "-").replace(" ", "_")
            results[arm][seed] = run_arm(base, where, rounds, rule, args.labels, args.ppo_steps)
            (out / "results.json").write_text(
                json.dumps({"args": vars(args), "results": results}, indent=2) + "\n"
            )
    print(
        f"\n{args.labels} labeled training pairs and {args.ppo_steps} PPO steps per arm; {args.seeds} task seeds"
    )
    print(f"{'arm':24}{'gold win rate over SFT':>26}{'KL from SFT':>18}{'gold score':>18}")
    for arm, by_seed in results.items():
        rows = list(by_seed.values())
        print(f"{arm:24}{spread([r['win_rate_gold'] for r in rows]):>26}{spread([r['kl'] for r in rows]):>18}"
              f"{spread([r['gold_policy'] for r in rows]):>18}")  # fmt: skip
    for arm, by_seed in results.items():
        print(
            f"{arm}: "
            + "; ".join(f"seed {s} win {r['win_rate_gold']:.3f} KL {r['kl']:.2f}" for s, r in by_seed.items())
        )
    print(f"[rounds] {out / 'results.json'}")


if __name__ == "__main__":
    main()
