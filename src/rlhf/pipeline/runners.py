"""What each pipeline stage runs: the stage's own command (sft, reward, ppo, ...) on its wired config,
plus what the pipeline adds around it (the feedback it simulates or collects, the held-out checks
of the reward model, the comparison of the methods)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rlhf.config.core import ConfigError
from rlhf.pipeline import feedback as fb
from rlhf.pipeline.config import FeedbackConfig
from rlhf.pipeline.layout import Paths, jsonl_ready
from rlhf.pipeline.wiring import (
    dpo_config,
    eval_config,
    eval_reward_config,
    generate_config,
    ppo_config,
    rejection_generate_config,
    rejection_sft_config,
    reward_config,
    rrhf_config,
    sft_config,
)
from rlhf.rewards.config import RewardSourcesConfig

# The pipeline runs a stage again from its start when it runs it at all (its inputs changed, or it
# never finished): checkpoints an earlier attempt left in the stage's directory are replaced
# (`overwrite=True`), as the stage's outputs are.


def run_sft_stage(p: Paths) -> dict[str, Any]:
    from rlhf.sft import run_sft

    return run_sft(sft_config(p), overwrite=True).summary


def run_generate_stage(p: Paths) -> dict[str, Any]:
    from rlhf.generate.run import run_generate

    return run_generate(generate_config(p))


def run_feedback_stage(p: Paths) -> dict[str, Any]:
    f = p.cfg.feedback
    out = p.stage("feedback")
    if f.source == "file":
        if not f.path:
            raise ConfigError(
                "`feedback.source: file` needs `feedback.path` (e.g. an `rlhf label export` file)"
            )
        return fb.split_file(f.path, out, heldout_fraction=f.heldout_fraction, seed=f.seed)
    from rlhf.rewards.sources import load_function

    if f.source == "people":
        from rlhf.pipeline.people import collect

        gold = load_function(p.cfg.gold) if p.cfg.gold else None
        stats = collect(out, p.candidates, f, gold, lambda: _selection(f))
    elif f.source == "judge":
        from rlhf.pipeline.judged import judge_pairs

        gold = load_function(p.cfg.gold) if p.cfg.gold else None
        stats = judge_pairs(p.candidates, f.judge, out, gold=gold, heldout_fraction=f.heldout_fraction,
                            seed=f.seed, selection=_selection(f))  # fmt: skip
    else:
        stats = _simulated(p, out, f, load_function)
    if p.cfg.earlier_feedback:
        stats.update(fb.add_earlier(out, Path(p.cfg.earlier_feedback)))
        fb.write_stats(out, stats)
    return stats


def _simulated(p: Paths, out: Path, f: FeedbackConfig, load_function) -> dict[str, Any]:
    if not p.cfg.gold:
        raise ConfigError("`feedback.source: simulate` needs `gold: module:function` to judge by")
    return fb.simulate(
        p.candidates,
        load_function(p.cfg.gold),
        out,
        labelers=f.labelers,
        temperature=f.temperature,
        resolve=f.resolve,
        heldout_fraction=f.heldout_fraction,
        seed=f.seed,
        selection=_selection(f),
    )


def _selection(f: FeedbackConfig) -> fb.Selection | None:
    """`feedback.select` as the feedback stage's selection (its reward sources loaded)."""
    if f.select == "all":
        return None
    from rlhf.rewards.sources import FunctionSource, RewardModelSource

    sources = [
        RewardModelSource(spec) if Path(spec).is_dir() else FunctionSource(spec) for spec in f.select_with
    ]
    if f.budget is None:
        raise ConfigError(f"`feedback.select: {f.select}` needs `feedback.budget`: how many pairs to label")
    return fb.Selection(f.select, f.budget, f.per_prompt, sources)


def run_reward_stage(p: Paths) -> dict[str, Any]:
    from rlhf.reward.evaluate import run_eval_reward
    from rlhf.reward.train import run_reward

    summary = dict(run_reward(reward_config(p), overwrite=True).summary)
    if p.cfg.reward_ensemble > 1:
        from rlhf.pipeline.ensemble import train_ensemble

        train = p.stage("feedback") / fb.TRAIN_FILE
        summary["ensemble"] = train_ensemble(
            reward_config(p), train, p.stage("reward"), p.cfg.reward_ensemble, p.cfg.feedback.seed
        )
    held = eval_reward_config(p)
    if jsonl_ready(Path(held.data.path)) is None:
        summary["heldout"] = run_eval_reward(held)
    else:  # nothing held out to score: say so where the report and the output check look
        out = Path(held.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"note": f"no held-out feedback in {held.data.path}"}) + "\n")
    # This round's new held-out pairs, judged by gold when there is one, else by the labelers.
    new = [p.stage("feedback") / f"{fb.NEW_PREFIX}{name}" for name in (fb.HELDOUT_GOLD_FILE, fb.HELDOUT_FILE)]
    new_pairs = next((path for path in new if jsonl_ready(path) is None), None)
    if p.cfg.earlier_feedback and p.cfg.reward_base and new_pairs is not None:
        summary["on_new_samples"] = _on_new_samples(p, held, new_pairs)
    return summary


def _on_new_samples(p: Paths, held: Any, new_pairs: Path) -> dict[str, Any]:
    """The earlier round's reward model and this round's on this round's new held-out pairs: how
    blind the old one was to the current policy's samples, and what retraining fixed. Written to
    `reward_eval/new_samples.json`, with the file it scored."""
    from rlhf.reward.evaluate import run_eval_reward

    out = p.run / "reward_eval"
    result = {}
    for name, model in (("before", p.cfg.reward_base), ("after", p.reward_model)):
        cfg = dataclasses.replace(
            held, reward=RewardSourcesConfig(model=model), data=dataclasses.replace(held.data, path=str(new_pairs)),
            output=str(out / f"new_samples_{name}.json"),
        )  # fmt: skip
        result[name] = {key: run_eval_reward(cfg).get(key) for key in ("accuracy", "pairs", "ece", "data")}
    (out / "new_samples.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def run_ppo_stage(p: Paths) -> dict[str, Any]:
    from rlhf.ppo import run_ppo

    return run_ppo(ppo_config(p), overwrite=True).summary


def run_dpo_stage(p: Paths) -> dict[str, Any]:
    from rlhf.dpo import run_dpo

    return run_dpo(dpo_config(p), overwrite=True).summary


def run_rrhf_stage(p: Paths) -> dict[str, Any]:
    from rlhf.rrhf import run_rrhf

    return run_rrhf(rrhf_config(p), overwrite=True).summary


def run_best_of_n_stage(p: Paths) -> dict[str, Any]:
    """Nothing to train: best-of-N is the SFT policy and the reward model, used at answer time."""
    out = p.stage("best_of_n")
    out.mkdir(parents=True, exist_ok=True)
    note = {"policy": p.sft_model, "reward_model": p.reward_model, "n": p.cfg.best_of_n.n}
    (out / "summary.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return note


def run_rejection_sampling_stage(p: Paths) -> dict[str, Any]:
    from rlhf.generate.run import run_generate
    from rlhf.sft import run_sft

    drafts = run_generate(rejection_generate_config(p))
    summary = {"generate": drafts, "sft": run_sft(rejection_sft_config(p), overwrite=True).summary}
    (p.stage("rejection_sampling") / "summary.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n"
    )
    return summary


def run_eval_stage(p: Paths) -> dict[str, Any]:
    from rlhf.eval.compare import write_comparison
    from rlhf.eval.policy import run_eval_policy

    results = {m: run_eval_policy(eval_config(p, m)) for m in p.cfg.methods}
    write_comparison(p.stage("eval"), list(p.cfg.methods), method_compute(p))
    if p.cfg.tax.wanted:
        _alignment_tax(p)
    else:  # an earlier run's measurement is not this one's
        (p.stage("eval") / "tax.json").unlink(missing_ok=True)
    return results[p.cfg.methods[0]]


def _alignment_tax(p: Paths) -> None:
    """eval/tax.json: the held-out losses and task scores of SFT and every policy (`rlhf.eval.tax`)."""
    from rlhf.eval.compare import LABELS
    from rlhf.eval.tax import TAX_FILE, measure, tax_rows, tax_table
    from rlhf.files import write_json_atomic

    policies = {"sft": p.sft_model, **{m: p.policy(m) for m in p.cfg.methods}}
    # Loaded as the SFT stage loads its model (dtype, trust_remote_code, ...), each at its own path.
    tax = measure(policies, p.cfg.tax, prompt=p.cfg.prompt, model=p.cfg.sft.model, device=p.cfg.eval.device)
    comparison = json.loads((p.stage("eval") / "comparison.json").read_text(encoding="utf-8"))
    tax["rows"] = tax_rows(tax, comparison)
    write_json_atomic(p.stage("eval") / TAX_FILE, tax)
    print("[eval] what alignment cost (each policy against SFT):")
    print(tax_table(tax["rows"], LABELS))


def method_compute(p: Paths) -> dict[str, dict[str, Any]]:
    """What each policy cost to make, from the pipeline's own timings: the stage's seconds, and
    whether it needed the reward model (and so the feedback, generate and reward stages)."""
    from rlhf.pipeline.state import read_state

    state = read_state(p.run)
    seconds = lambda name: (state.get(name) or {}).get("seconds")  # noqa: E731
    out = {"sft": {"seconds": seconds("sft"), "uses_reward_model": False}}
    for m in p.cfg.methods:
        out[m] = {"seconds": seconds(m), "uses_reward_model": m != "dpo"}
    return out


def run_report_stage(p: Paths) -> dict[str, Any]:
    from rlhf.report import write_report

    return {"report": str(write_report(p.run))}
