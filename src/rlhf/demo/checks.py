"""What a demo run's win rate rests on, checked on its held-out documents after the pipeline: how
good its SFT model's answers are (greedy as well as sampled; how many state a fact wrong) and
whether its reward model sees a single fact swapped or left out.

Written to `<run>/demo_checks.json` (`rlhf demo` does it after every run; `bench/demo_checks.py` for
runs made before) and read by the sweep over seeds (`rlhf.demo.sweep`). Recomputed only when the
SFT or reward model changed.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf.demo import task

if TYPE_CHECKING:
    from rlhf.rewards.sources import RewardModelSource

CHECKS_FILE = "demo_checks.json"
_FACTS = re.compile(r"(\w+) is a (\w+) in (\w+)\. \w+ has a (\w+) (\w+)\.")
_WORDS = re.compile(r"[A-Za-z]+")
_FACT_WORDS = {w.lower() for words in task.SLOTS.values() for w in words}
LEFT_OUT = {
    "job": "{name} lives in {city} with a {color} {pet}.",
    "city": "{name} is a {job} with a {color} {pet}.",
    "color": "{name} is a {job} in {city} with a {pet}.",
}
"""The ideal summary with one fact left out (gold 4 against the ideal's 5), one form per fact."""

Pair = tuple[str, str, str, str]
"""(prompt, the better summary, the worse one, the fact they differ in)."""


def facts_of(prompt: str) -> dict[str, str]:
    """The five facts (slot -> the document's word) a demo prompt states."""
    match = _FACTS.search(prompt)
    if match is None:
        raise ValueError(f"no facts found in the demo prompt {prompt!r}")
    return dict(zip(task.SLOTS, match.groups(), strict=True))


def swapped_pairs(prompts: list[str], seed: int = 0) -> list[Pair]:
    """The ideal summary against the same with one fact swapped for another word of its kind (gold 5
    against 2): five per document, every fact in turn."""
    rng = random.Random(seed)
    pairs = []
    for prompt in prompts:
        facts = facts_of(prompt)
        for slot, words in task.SLOTS.items():
            wrong = dict(facts, **{slot: rng.choice([w for w in words if w != facts[slot]])})
            pairs.append((prompt, task.good_summary(facts), task.good_summary(wrong), slot))
    return pairs


def left_out_pairs(prompts: list[str]) -> list[Pair]:
    """The ideal summary against the same with one fact left out (`LEFT_OUT`): three per document."""
    pairs = []
    for prompt in prompts:
        facts = facts_of(prompt)
        for slot, form in LEFT_OUT.items():
            pairs.append((prompt, task.good_summary(facts), form.format(**facts), slot))
    return pairs


def reward_model_on_pairs(source: RewardModelSource, pairs: list[Pair]) -> dict[str, float]:
    """Share of `pairs` the reward model orders right (a tie counts as wrong), per fact and `all`."""
    good = source([p for p, *_ in pairs], [g for _, g, _, _ in pairs]).rewards
    bad = source([p for p, *_ in pairs], [b for _, _, b, _ in pairs]).rewards
    right: dict[str, list[bool]] = {}
    for (*_, slot), g, b in zip(pairs, good, bad, strict=True):
        right.setdefault(slot, []).append(g > b)
        right.setdefault("all", []).append(g > b)
    return {slot: sum(v) / len(v) for slot, v in right.items()}


def invented(prompt: str, summary: str) -> bool:
    """Whether `summary` states a fact word (name, job, city, colour, animal) its document lacks."""
    doc = {w.lower() for w in _WORDS.findall(prompt)}
    return any(w.lower() in _FACT_WORDS and w.lower() not in doc for w in _WORDS.findall(summary))


def answer_figures(prompts: list[str], answers: list[str]) -> dict[str, float]:
    """Mean gold score of the answers, and the shares that state a fact wrong and that state all five."""
    gold = task.gold_score(prompts, answers)
    complete = [
        {w.lower() for w in facts_of(p).values()} <= {w.lower() for w in _WORDS.findall(a)}
        for p, a in zip(prompts, answers, strict=True)
    ]
    return {
        "gold": statistics.fmean(gold),
        "wrong_fact": statistics.fmean(invented(p, a) for p, a in zip(prompts, answers, strict=True)),
        "all_five": statistics.fmean(complete),
    }


def sft_greedy(cfg: Any, out: Path) -> tuple[list[str], list[str]]:
    """(prompts, SFT's greedy answers) on the run's held-out documents, through `eval policy`."""
    from rlhf.eval.policy import run_eval_policy
    from rlhf.pipeline.layout import Paths
    from rlhf.pipeline.wiring import eval_config

    paths = Paths(Path(cfg.output_dir), cfg)
    section = eval_config(paths, cfg.methods[0])
    section = dataclasses.replace(
        section,
        model=dataclasses.replace(section.model, path=paths.sft_model),
        baseline=None,
        reference=None,
        reward=dataclasses.replace(section.reward, model=None),
        output_dir=str(out),
        show=0,
        progress=False,
        sampling=dataclasses.replace(section.sampling, temperature=0.0),
        best_of=1,
        judge=None,
        metrics=[],
        references=None,
        reference_field=None,
    )
    run_eval_policy(section)
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["prompt"] for r in rows], [r["policy"] for r in rows]


def run_checks(cfg: Any) -> dict[str, Any]:
    """The checks of the finished demo run `cfg` (its `PipelineConfig`), written to `CHECKS_FILE`
    in its directory; kept from an earlier call when the SFT and reward models are unchanged."""
    from rlhf.pipeline.layout import Paths
    from rlhf.pipeline.state import input_files

    run = Path(cfg.output_dir)
    paths = Paths(run, cfg)
    reward_model = paths.reward_model if Path(paths.reward_model).is_dir() else None
    inputs = input_files([{"path": paths.sft_model}, {"path": reward_model}])
    kept = run / CHECKS_FILE
    if kept.is_file():
        old = json.loads(kept.read_text(encoding="utf-8"))
        if old.get("inputs") == json.loads(json.dumps(inputs)):
            return old
    prompts, greedy = sft_greedy(cfg, run / "checks" / "sft_greedy")
    sampled = [json.loads(line) for line in (run / "eval" / "samples.jsonl").read_text().splitlines()]
    result: dict[str, Any] = {
        "inputs": inputs,
        "sft_greedy": answer_figures(prompts, greedy),
        "sft_sampled": answer_figures([r["prompt"] for r in sampled], [r["baseline"] for r in sampled]),
    }
    if reward_model is not None:
        from rlhf.rewards.sources import RewardModelSource

        source = RewardModelSource(reward_model, batch_size=32)  # loaded once for both probes
        result["reward_swapped"] = reward_model_on_pairs(source, swapped_pairs(prompts))
        result["reward_left_out"] = reward_model_on_pairs(source, left_out_pairs(prompts))
    kept.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def checks_line(result: dict[str, Any]) -> str:
    """One line of the checks, as the demo prints them."""
    greedy, sampled = result["sft_greedy"], result["sft_sampled"]
    line = (
        f"[demo] SFT's gold score {sampled['gold']:.2f} sampled, {greedy['gold']:.2f} greedy "
        f"({greedy['wrong_fact']:.0%} of greedy answers state a fact wrong)"
    )
    if "reward_swapped" in result:
        line += (
            f"; the reward model orders {result['reward_swapped']['all']:.0%} of ideal summaries above one "
            f"with a fact swapped, {result['reward_left_out']['all']:.0%} above one with a fact left out"
        )
    return line
