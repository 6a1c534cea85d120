"""`rlhf demo --seeds N`: the whole demo for N task seeds, and every method's spread over them.

Seed s runs in `<output_dir>/seed-<s>` (task data and base model made from s), so a rerun skips
every finished stage of every seed, and changing one stage's settings reruns only that stage and
what depends on it. The table gives, for each policy, the median, quartiles, mean and worst seed
(lowest score and win rate, highest KL) of its gold score, its gold win rate over SFT and its KL
from SFT; then each seed's SFT and reward-model figures (`rlhf.demo.checks`) and every method's win
rate, and each seed's over-optimization lines. `seeds.json` keeps it all, with standard deviations.
Plain Python over the runs' files; no torch.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEEDS_FILE = "seeds.json"
COLUMNS = (
    ("gold", "gold score", min),
    ("win_rate", "win rate over SFT (gold)", min),
    ("kl", "KL from SFT (nats/answer)", max),
)
"""(key, title, worst): what the table shows per policy, and which seed counts as its worst."""


@dataclass
class Spread:
    """One quantity of one policy over the seeds."""

    values: list[float]
    """(S,) the value on each seed that has it, in seed order."""
    seeds: list[int]
    """(S,) the seed of each value."""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 with one seed)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def quartiles(self) -> tuple[float, float, float]:
        """(first quartile, median, third quartile) over seeds, by linear interpolation between
        the sorted values (the values themselves with one seed)."""
        if len(self.values) == 1:
            return (self.values[0],) * 3
        q1, median, q3 = statistics.quantiles(self.values, n=4, method="inclusive")
        return q1, median, q3

    def worst(self, pick) -> tuple[float, int]:
        """(the worst value by `pick` (min or max), its seed)."""
        value = pick(self.values)
        return value, self.seeds[self.values.index(value)]


def seed_dirs(output_dir: str, seeds: Sequence[int]) -> list[Path]:
    return [Path(output_dir) / f"seed-{s}" for s in seeds]


def policy_values(comparison: dict[str, Any]) -> dict[str, dict[str, float]]:
    """policy -> {gold, win_rate, kl} from one run's comparison (a missing figure is left out)."""
    policies = comparison.get("policies") or {}
    wins = ((comparison.get("win_rates") or {}).get("gold")) or {}
    out: dict[str, dict[str, float]] = {}
    for name, entry in policies.items():
        row: dict[str, float] = {}
        gold = (entry.get("scores") or {}).get("gold") or {}
        if isinstance(gold.get("mean"), int | float):
            row["gold"] = float(gold["mean"])
        rate = ((wins.get(name) or {}).get("sft") or {}).get("rate")
        if isinstance(rate, int | float):
            row["win_rate"] = float(rate)
        if isinstance(entry.get("kl"), int | float):
            row["kl"] = float(entry["kl"])
        out[name] = row
    return out


def kl_flags(run: Path) -> list[int]:
    """The PPO steps whose KL the guard flagged in one run (empty when none, or no PPO ran)."""
    try:
        summary = json.loads((run / "ppo" / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [int(s) for s in summary.get("kl_flagged_steps") or []]


def aggregate(runs: dict[int, Path]) -> dict[str, Any]:
    """The sweep's result from each seed's run directory: per policy and quantity its spread."""
    from rlhf.eval.compare import COMPARISON_FILE, LABELS

    spreads: dict[str, dict[str, Spread]] = {}
    labels: dict[str, str] = {}
    for seed, run in runs.items():
        comparison = json.loads((run / "eval" / COMPARISON_FILE).read_text(encoding="utf-8"))
        for name, row in policy_values(comparison).items():
            labels[name] = LABELS.get(name, name)
            for key, value in row.items():
                spread = spreads.setdefault(name, {}).setdefault(key, Spread([], []))
                spread.values.append(value)
                spread.seeds.append(seed)
    policies: dict[str, Any] = {}
    for name, by_key in spreads.items():
        entry: dict[str, Any] = {"label": labels[name]}
        for key, _, pick in COLUMNS:
            if key in by_key:
                s = by_key[key]
                worst, worst_seed = s.worst(pick)
                q1, median, q3 = s.quartiles
                entry[key] = {"mean": s.mean, "std": s.std, "median": median, "q1": q1, "q3": q3, "worst": worst,
                              "worst_seed": worst_seed, "values": s.values, "seeds": s.seeds}  # fmt: skip
        policies[name] = entry
    flagged = {seed: kl_flags(run) for seed, run in runs.items()}
    return {"seeds": list(runs), "runs": {s: str(r) for s, r in runs.items()}, "policies": policies,
            "ppo_kl_flagged_steps": flagged, "per_seed": {s: seed_figures(r) for s, r in runs.items()}}  # fmt: skip


def seed_figures(run: Path) -> dict[str, Any]:
    """One seed's SFT and reward model, the links a win rate rests on: SFT's held-out loss (the
    last evaluation), its gold score sampled and greedy and the share of greedy answers with a
    fact wrong, the reward model's held-out accuracy on the pairs gold decides and on one fact
    swapped or left out (`rlhf.demo.checks`), and the over-optimization lines of the run's headline."""
    from rlhf.demo.checks import CHECKS_FILE
    from rlhf.files import read_json_dict as read

    head = read(run / "summary.json").get("headline") or {}
    sft_eval = read(run / "sft" / "summary.json").get("eval")
    if isinstance(sft_eval, list):  # every evaluation of the run: the last one counts
        sft_eval = sft_eval[-1] if sft_eval else None
    last = sft_eval if isinstance(sft_eval, dict) else {}
    checks = read(run / CHECKS_FILE)
    return {
        "sft_heldout_loss": last.get("loss"),
        "sft_gold": head.get("gold_sft"),
        "sft_gold_greedy": (checks.get("sft_greedy") or {}).get("gold"),
        "sft_greedy_wrong_fact": (checks.get("sft_greedy") or {}).get("wrong_fact"),
        "reward_model_accuracy": head.get("reward_model_accuracy"),
        "reward_model_swapped": (checks.get("reward_swapped") or {}).get("all"),
        "reward_model_left_out": (checks.get("reward_left_out") or {}).get("all"),
        "overoptimization": [
            f.get("line") for f in head.get("overoptimization") or [] if isinstance(f, dict)
        ],
    }


PER_SEED = (
    ("sft_heldout_loss", "SFT loss"),
    ("sft_gold", "SFT gold"),
    ("sft_gold_greedy", "greedy"),
    ("sft_greedy_wrong_fact", "wrong fact"),
    ("reward_model_accuracy", "RM acc"),
    ("reward_model_swapped", "swapped"),
    ("reward_model_left_out", "left out"),
)
"""(key, title): the per-seed columns of SFT and the reward model."""
SHORT = {"best_of_n": "best-of-N", "rejection_sampling": "rej.samp."}


def _seeds_text(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def sweep_table(result: dict[str, Any]) -> str:
    """Per quantity, one row per policy: median, quartiles, mean and worst seed over the seeds; then
    one row per seed: its SFT and reward model, and each method's gold win rate over SFT."""
    seeds = result["seeds"]
    lines = [f"{len(seeds)} task seeds ({_seeds_text(seeds)}): median, quartiles, mean and worst seed"]
    for key, title, _ in COLUMNS:
        lines.append(f"{title:<28}{'median':>8}{'quartiles':>16}{'mean':>8}{'worst':>14}")
        for entry in result["policies"].values():
            stat = entry.get(key)
            if stat is None or (key != "gold" and entry["label"] == "SFT"):
                continue
            quartiles = f"{stat['q1']:.3f}-{stat['q3']:.3f}"
            worst = f"{stat['worst']:.3f} (s{stat['worst_seed']})"
            lines.append(
                f"  {entry['label']:<26}{stat['median']:>8.3f}{quartiles:>16}{stat['mean']:>8.3f}{worst:>14}"
            )
    methods = [n for n in result["policies"] if n != "sft"]
    wins = {
        n: dict(zip(p["win_rate"]["seeds"], p["win_rate"]["values"], strict=True))
        for n in methods
        if "win_rate" in (p := result["policies"][n])
    }
    titles = [t for _, t in PER_SEED] + [SHORT.get(n, result["policies"][n]["label"]) for n in wins]
    lines.append(
        "per seed: SFT (held-out loss; gold sampled, greedy; greedy answers with a fact wrong), reward "
        "model (held-out accuracy; ideal over one fact swapped, left out), gold win rate over SFT"
    )
    lines.append(f"{'seed':>4}" + "".join(f"{t:>11}" for t in titles))
    per_seed = result.get("per_seed") or {}
    for seed in seeds:
        figures = per_seed.get(seed) or {}
        cells = [_num(figures.get(k)) for k, _ in PER_SEED] + [_num(w.get(seed)) for w in wins.values()]
        lines.append(f"{seed:>4}" + "".join(f"{c:>11}" for c in cells))
    flagged = {s: steps for s, steps in result["ppo_kl_flagged_steps"].items() if steps}
    if flagged:
        text = "; ".join(f"seed {s}: steps {', '.join(map(str, v))}" for s, v in flagged.items())
        lines.append(f"PPO's KL guard fired on {len(flagged)} of {len(seeds)} seeds ({text})")
    else:
        lines.append(f"PPO's KL guard fired on none of the {len(seeds)} seeds")
    for seed, figures in per_seed.items():
        lines += [f"seed {seed}: {line}" for line in figures.get("overoptimization") or []]
    return "\n".join(lines)


def run_sweep(cfg, seeds: int, run_one: Callable[[Any], Any]) -> dict[str, Any]:
    """Run the demo `cfg` (a `DemoConfig`) with `run_one` (`rlhf.demo.run_demo`) for task seeds
    task.seed .. task.seed + seeds - 1, each in `<output_dir>/seed-<s>`; print and write
    (`<output_dir>/seeds.json`) the spread over seeds."""
    import dataclasses

    first = cfg.task.seed
    chosen = list(range(first, first + seeds))
    runs: dict[int, Path] = {}
    for seed, run in zip(chosen, seed_dirs(cfg.pipeline.output_dir, chosen), strict=True):
        print(f"[demo] task seed {seed} in {run}")
        run_one(dataclasses.replace(
            cfg, task=dataclasses.replace(cfg.task, seed=seed),
            pipeline=dataclasses.replace(cfg.pipeline, output_dir=str(run)),
        ))  # fmt: skip
        runs[seed] = run
    result = aggregate(runs)
    out = Path(cfg.pipeline.output_dir) / SEEDS_FILE
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    print(sweep_table(result))
    print(f"[demo] {len(chosen)} seeds; the spread in {out}")
    return result
