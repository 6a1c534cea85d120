"""Where the demo's PPO KL goes, and what its reward model can see: the README's "Why PPO ran away"
and "What PPO cannot fix" figures, from one finished demo run.

    .venv/bin/rlhf demo                                   # or: rlhf demo --seeds 5 (then --run runs/demo/seed-0)
    .venv/bin/python bench/demo_ppo_kl.py --run runs/demo

1. The KL leash's placement. It trains PPO once more from the run's SFT and reward model with the
   per-token KL penalty (k1) summed into the reward (`kl.placement: reward`, what the demo did
   before), everything else as the run's own PPO (`kl.placement: auto`: a per-token k2 loss term
   with RLOO), then samples `--samples` answers per held-out document from both policies and prints,
   for each, the per-answer KL from the SFT model (mean, median, 99th percentile, largest), the
   share of answers that never ended, their mean gold score, and the training steps whose logged KL
   went over 5 nats.
2. The reward model against a fact copied wrong: for every held-out document, the ideal summary
   against the same summary with one fact swapped (each of the five facts in turn); the share of
   pairs the reward model orders right, per fact and overall (0.5: chance).
3. What PPO loses on: from the run's evaluation (no sampling), the held-out documents where PPO's
   answer has a lower gold score than SFT's, how many of those state a fact the document does not
   have, and how many answers of PPO, SFT and DPO state such a fact.

The second PPO run goes to `--out` (default `<run>/bench-kl`) and is reused when there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
from pathlib import Path

import yaml

from rlhf.config.core import from_dict
from rlhf.demo import task
from rlhf.demo.checks import invented, reward_model_on_pairs, swapped_pairs
from rlhf.pipeline.config import PipelineConfig
from rlhf.pipeline.layout import Paths
from rlhf.pipeline.wiring import ppo_config
from rlhf.rewards.sources import RewardModelSource

SPIKE = 5.0
"""A training step counts as a KL spike over this many nats per completion."""


def load_run(run: Path) -> tuple[PipelineConfig, Path]:
    """The run's pipeline config, and the directory its relative paths start from."""
    cfg = from_dict(PipelineConfig, yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")))
    out = Path(cfg.output_dir)
    root = run.resolve()
    for _ in out.parts if not out.is_absolute() else ():
        root = root.parent
    return cfg, root


def train_kl_in_reward(cfg: PipelineConfig, out: Path) -> Path:
    """PPO as the run's, with the KL penalty (k1) in the reward; returns its policy directory."""
    from rlhf.ppo.train import run_ppo

    ppo = ppo_config(Paths(Path(cfg.output_dir), cfg))
    kl = dataclasses.replace(ppo.kl, placement="reward", estimator="k1")
    ppo = dataclasses.replace(ppo, kl=kl, output_dir=str(out / "ppo-kl-in-reward"))
    policy = out / "ppo-kl-in-reward" / "policy"
    if not (policy / "config.json").is_file():
        run_ppo(ppo)
    return policy


def answers_kl(cfg: PipelineConfig, policy: Path, sft: str, samples: int) -> dict[str, float]:
    """`samples` answers per held-out document from `policy`: per-answer KL from `sft`, gold, endings."""
    from rlhf.eval.policy import EvalInputs
    from rlhf.generation.sampling import generate_samples
    from rlhf.models import load_lm
    from rlhf.models.readout import completion_logprobs

    ecfg = dataclasses.replace(
        cfg.eval, model=dataclasses.replace(cfg.eval.model, path=str(policy)), progress=False
    )
    inputs = EvalInputs.load(ecfg)
    sampling = dataclasses.replace(inputs.sampling, seed=0)
    read = {"batch_size": ecfg.batch_size, "temperature": sampling.temperature,
            "pad_id": inputs.tokenizer.pad_token_id or 0}  # fmt: skip

    def load(path: str):
        model_cfg = dataclasses.replace(ecfg.model, path=path)
        return load_lm(model_cfg, for_training=False, tokenizer=inputs.tokenizer).to(inputs.device)

    model = load(str(policy))
    groups = generate_samples(
        model, inputs.tokenizer, inputs.prompt_ids, sampling, per_prompt=samples, unique=True, progress=False
    )
    flat = [(i, s) for i, group in enumerate(groups) for s in group]
    prompt_ids = [inputs.prompt_ids[i] for i, _ in flat]
    completions = [s.token_ids for _, s in flat]
    logps = {"policy": completion_logprobs(model, prompt_ids, completions, **read)}
    del model
    logps["sft"] = completion_logprobs(load(sft), prompt_ids, completions, **read)
    kls = sorted(sum(p) - sum(r) for p, r in zip(logps["policy"], logps["sft"], strict=True))
    gold = task.gold_score([inputs.texts[i] for i, _ in flat], [s.text for _, s in flat])
    return {
        "answers": len(kls),
        "mean": statistics.fmean(kls),
        "median": statistics.median(kls),
        "p99": kls[min(len(kls) - 1, round(0.99 * (len(kls) - 1)))],
        "largest": kls[-1],
        "top2_share": sum(kls[-max(1, len(kls) // 50) :]) / max(sum(kls), 1e-9),
        "unfinished": sum(s.finish == "length" for _, s in flat) / len(flat),
        "gold": statistics.fmean(gold),
    }


def spikes(run_dir: Path) -> tuple[int, int, float]:
    """(training steps with a logged KL over SPIKE, steps, the largest logged KL) of a PPO run."""
    from rlhf.tracking.metrics import read_metrics

    kls = [row["ppo/kl"] for row in read_metrics(run_dir) if row.get("ppo/kl") is not None]
    return sum(k > SPIKE for k in kls), len(kls), max(kls, default=float("nan"))


def losses(run: Path) -> dict[str, int]:
    """PPO's losses to SFT by gold on the evaluation, and answers with an invented fact per method."""
    rows = [json.loads(line) for line in (run / "eval" / "samples.jsonl").read_text().splitlines()]
    dpo_file = run / "eval" / "dpo" / "samples.jsonl"
    dpo = [json.loads(line) for line in dpo_file.read_text().splitlines()] if dpo_file.is_file() else []
    lost = [r for r in rows if r["policy_scores"]["gold"] < r["baseline_scores"]["gold"]]
    return {
        "documents": len(rows),
        "ppo_losses": len(lost),
        "losses_with_a_wrong_fact": sum(invented(r["prompt"], r["policy"]) for r in lost),
        "ppo_wrong_fact": sum(invented(r["prompt"], r["policy"]) for r in rows),
        "sft_wrong_fact": sum(invented(r["prompt"], r["baseline"]) for r in rows),
        "dpo_wrong_fact": sum(invented(r["prompt"], r["policy"]) for r in dpo),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo", help="a finished demo run directory")
    parser.add_argument("--samples", type=int, default=2, help="answers per held-out document")
    parser.add_argument("--out", default=None, help="where the KL-in-reward PPO run goes")
    args = parser.parse_args()
    cfg, root = load_run(Path(args.run))
    out = Path(args.out).resolve() if args.out else None
    os.chdir(root)  # the run's config names its files relative to where the demo ran
    run = Path(cfg.output_dir)
    out = out or run / "bench-kl"
    paths = Paths(run, cfg)
    before = train_kl_in_reward(cfg, out)
    rows = {
        "KL in the reward (k1)": (before, out / "ppo-kl-in-reward"),
        "run's PPO (kl.placement auto)": (Path(paths.policy("ppo")), run / "ppo"),
    }
    results = {}
    for name, (policy, ppo_dir) in rows.items():
        results[name] = answers_kl(cfg, policy, paths.sft_model, args.samples)
        results[name]["spikes"], results[name]["steps"], results[name]["max_step_kl"] = spikes(ppo_dir)
    prompts = [json.loads(line)["prompt"] for line in Path(cfg.eval.data.path).read_text().splitlines()]
    facts = reward_model_on_pairs(
        RewardModelSource(paths.reward_model, batch_size=32), swapped_pairs(prompts)
    )
    lost = losses(run)
    print(table(results, facts, run))
    print(
        f"PPO lost to SFT (by gold) on {lost['ppo_losses']} of {lost['documents']} held-out documents, "
        f"{lost['losses_with_a_wrong_fact']} of them with a fact the document does not have; answers "
        f"with such a fact: PPO {lost['ppo_wrong_fact']}, SFT {lost['sft_wrong_fact']}, DPO {lost['dpo_wrong_fact']}"
    )
    record = {"kl": results, "facts": facts, "losses": lost}
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")


def table(results: dict[str, dict[str, float]], facts: dict[str, float], run: Path) -> str:
    lines = [f"PPO's KL from SFT on {run}'s held-out documents (per answer, nats)"]
    for name, r in results.items():
        lines.append(
            f"  {name:32s} mean {r['mean']:.2f}  median {r['median']:.2f}  p99 {r['p99']:.1f}  "
            f"largest {r['largest']:.0f}  top 2% carry {r['top2_share']:.0%}  "
            f"unfinished {r['unfinished']:.1%}  gold {r['gold']:.2f}  ({r['answers']:.0f} answers); "
            f"training steps over {SPIKE:.0f} nats: {r['spikes']:.0f} of {r['steps']:.0f} "
            f"(largest {r['max_step_kl']:.1f})"
        )
    per_slot = "  ".join(f"{slot} {acc:.2f}" for slot, acc in facts.items() if slot != "all")
    lines.append(
        f"reward model on ideal vs one-fact-swapped summaries: {facts['all']:.3f} right (chance 0.5); {per_slot}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
