"""End to end: a smaller `rlhf demo`, as a user runs it, must show RLHF working by the gold rule."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.config.core import load_config
from rlhf.demo import DemoConfig, build_base_model, write_task_data
from rlhf.demo.task import gold_score

RLHF = str(Path(sys.executable).with_name("rlhf"))


@pytest.mark.slow
def test_smaller_demo_beats_sft_on_two_seeds_with_the_kl_in_check(tmp_path):
    out = tmp_path / "runs"
    # The demo's own SFT (copying facts must be learned) and PPO; less feedback and fewer PPO steps;
    # the other methods run a few steps each (only PPO's figures are checked here).
    smaller = [
        f"pipeline.output_dir={out}", "task.candidate_prompts=300", "task.eval_prompts=120",
        "pipeline.reward.max_steps=250", "pipeline.ppo.max_steps=40", "pipeline.dpo.max_steps=30",
        "pipeline.rrhf.max_steps=30", "pipeline.rejection_sampling.sft.max_steps=30",
    ]  # fmt: skip
    proc = subprocess.run(
        [RLHF, "demo", "--seeds", "2", "--set", *smaller], capture_output=True, text=True, timeout=2400
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = json.loads((out / "seeds.json").read_text())
    assert sweep["seeds"] == [0, 1]
    ppo = sweep["policies"]["ppo"]
    for seed, run in ((0, out / "seed-0"), (1, out / "seed-1")):
        head = json.loads((run / "summary.json").read_text())["headline"]
        # PPO beats SFT by the hidden gold rule on each seed, on a leash: a few answers that ran away
        # (100-280 nats each) would lift the mean KL over the 120 held-out answers past this bound.
        assert head["gold_policy"] > head["gold_sft"] + 0.2, (seed, head)
        assert head["win_rate_gold"] > 0.5, (seed, head)
        assert head["kl"] < KL_BOUND, (seed, head)
        assert ppo["kl"]["values"][seed] == pytest.approx(head["kl"])
        # Simulated labelers disagree about as often as people: agreement well above chance, well below 1.
        assert 0.6 < head["labeler_raw_agreement"] < 0.9, head
        assert head["reward_model_accuracy"] > 0.6, head
        assert_one_run(run, proc.stdout)
        assert_checks(run, sweep["per_seed"][str(seed)])
    # The spread over seeds, as the README shows it.
    assert "2 task seeds (0, 1): median, quartiles, mean and worst seed" in proc.stdout
    assert "KL guard fired" in proc.stdout

    # A second sweep finds every stage of every seed finished and only prints the tables again.
    again = subprocess.run(
        [RLHF, "demo", "--seeds", "2", "--set", *smaller], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped") == 2 * 11


def assert_checks(run: Path, per_seed: dict) -> None:
    """The run's checks: SFT's greedy figures are those of the greedy answers it kept, and the
    sweep's per-seed row carries them."""
    from rlhf.demo.checks import answer_figures

    checks = json.loads((run / "demo_checks.json").read_text())
    rows = [
        json.loads(line)
        for line in (run / "checks" / "sft_greedy" / "samples.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 120
    assert checks["sft_greedy"] == answer_figures([r["prompt"] for r in rows], [r["policy"] for r in rows])
    assert per_seed["sft_gold_greedy"] == checks["sft_greedy"]["gold"]
    assert per_seed["reward_model_swapped"] == checks["reward_swapped"]["all"]
    assert per_seed["reward_model_left_out"] == checks["reward_left_out"]["all"]
    assert set(checks["reward_swapped"]) == {"name", "job", "city", "color", "pet", "all"}


def test_the_checks_compare_the_ideal_summary_with_one_fact_changed():
    from rlhf.demo.checks import answer_figures, left_out_pairs, swapped_pairs
    from rlhf.demo.task import make_split

    prompts = [r["prompt"] for r in make_split(30, seed=7)]
    swapped, left_out = swapped_pairs(prompts), left_out_pairs(prompts)
    assert len(swapped) == 5 * 30 and len(left_out) == 3 * 30
    # By the gold rule: the ideal states all five facts (5); a swapped fact is one fewer and one
    # invented (5 - 1 - 2 = 2); a fact left out is one fewer (4).
    for pairs, worse in ((swapped, 2.0), (left_out, 4.0)):
        assert set(gold_score([p for p, *_ in pairs], [b for _, b, _, _ in pairs])) == {5.0}
        assert set(gold_score([p for p, *_ in pairs], [w for _, _, w, _ in pairs])) == {worse}
    # Each swapped fact in turn: the pair differs in exactly that slot's word.
    assert [slot for *_, slot in swapped[:5]] == ["name", "job", "city", "color", "pet"]
    figures = answer_figures([p for p, *_ in swapped[:2]], [swapped[0][1], swapped[1][2]])
    assert figures == {"gold": 3.5, "wrong_fact": 0.5, "all_five": 0.5}


KL_BOUND = 4.0
"""Nats per answer. The full demo's seeds measure 1.1-1.4 (README); two or three runaway answers
among 120 would lift the mean past it."""


def assert_one_run(run: Path, stdout: str) -> None:
    """What one seed's run wrote and told the user: the table, the report, every method side by side."""
    head = json.loads((run / "summary.json").read_text())["headline"]
    assert f"report: {run / 'report.html'}" in stdout
    assert (run / "report.html").stat().st_size > 10_000
    # The eval's gold scores are the gold rule applied to what each policy wrote.
    rows = [json.loads(line) for line in (run / "eval" / "samples.jsonl").read_text().splitlines()]
    assert [r["policy_scores"]["gold"] for r in rows] == gold_score(
        [r["prompt"] for r in rows], [r["policy"] for r in rows]
    )
    # Every method from the same SFT model and feedback, side by side on the same held-out documents.
    comparison = json.loads((run / "eval" / "comparison.json").read_text())
    assert list(comparison["policies"]) == ["sft", "ppo", "dpo", "rrhf", "best_of_n", "rejection_sampling"]
    assert "the methods side by side" in stdout and "rejection sampling" in stdout
    gold_sft = comparison["policies"]["sft"]["scores"]["gold"]["mean"]
    assert gold_sft == pytest.approx(head["gold_sft"])
    # Best-of-4 by the reward model picks better answers than one sample, by the gold rule too.
    assert comparison["policies"]["best_of_n"]["scores"]["gold"]["mean"] > gold_sft
    page = (run / "report.html").read_text()
    assert "Methods compared" in page and "KL guard:" in page
    # The alignment tax on the held-out documents' demonstrations and the documents as plain text.
    tax = json.loads((run / "eval" / "tax.json").read_text())
    assert [r["method"] for r in tax["rows"]] == ["ppo", "dpo", "rrhf", "best_of_n", "rejection_sampling"]
    assert set(tax["rows"][0]["changes"]) == {"loss heldout_demonstrations.jsonl", "loss documents.jsonl"}
    assert "what alignment cost" in stdout and "What alignment cost" in page


def test_task_data_and_base_model(tmp_path):
    cfg = load_config(DemoConfig, None, ["task.sft_examples=20", "task.eval_prompts=5"]).task
    paths = write_task_data(cfg, tmp_path)
    rows = {
        name: [json.loads(line) for line in Path(p).read_text().splitlines()] for name, p in paths.items()
    }
    assert len(rows["sft"]) == 20 and len(rows["eval"]) == 5
    assert set(rows["eval"][0]) == {"prompt"} and set(rows["sft"][0]) == {"prompt", "completion", "style"}
    # Held-out documents are new: in no other split.
    seen = {r["prompt"] for name in ("sft", "candidates", "ppo") for r in rows[name]}
    assert not seen & {r["prompt"] for r in rows["eval"]}
    # The alignment tax's texts: the held-out documents' demonstrations, and the documents alone.
    assert [r["prompt"] for r in rows["heldout_demonstrations"]] == [r["prompt"] for r in rows["eval"]]
    assert [r["text"] for r in rows["documents"]] == [
        p["prompt"].removeprefix("Summarize: ") for p in rows["eval"]
    ]
    # Written again only when different, so the pipeline can tell data that did not change.
    before = Path(paths["sft"]).stat().st_mtime_ns
    write_task_data(cfg, tmp_path)
    assert Path(paths["sft"]).stat().st_mtime_ns == before

    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build_base_model(cfg, tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    # The merges stop when the task's text has no pair left to merge: fewer than the 640 allowed.
    assert model.config.hidden_size == 128 and model.config.vocab_size == len(tokenizer) <= 640
    assert model.config.num_attention_heads == model.config.num_key_value_heads == 8
    # Every fact word is one token, so copying a fact is copying one token.
    for word in ("Mia", "baker", "Oslo", "green", "cat", "Tokyo"):
        assert len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    text = "Summarize: Mia is a baker in Oslo. Ünïcode round-trips too."
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def _comparison(gold: dict[str, float], wins: dict[str, float], kl: dict[str, float]) -> dict:
    """A comparison.json in the pipeline's format: per policy its gold mean and KL; win rates over SFT."""
    policies = {
        name: {
            "label": name.upper(),
            "scores": {"gold": {"mean": g, "stderr": 0.1, "n": 200}},
            "kl": kl[name],
        }
        for name, g in gold.items()
    }
    rates = {name: {"sft": {"rate": rate}} for name, rate in wins.items()}
    return {"methods": list(wins), "policies": policies, "win_rates": {"gold": rates}}


def test_the_sweep_table_gives_median_quartiles_mean_and_worst_seed(tmp_path):
    from rlhf.demo.sweep import aggregate, sweep_table

    figures = {
        3: (
            {"sft": 3.0, "ppo": 4.5, "dpo": 4.0},
            {"ppo": 0.80, "dpo": 0.70},
            {"sft": 0.0, "ppo": 1.0, "dpo": 0.5},
        ),
        4: (
            {"sft": 3.2, "ppo": 4.1, "dpo": 4.4},
            {"ppo": 0.74, "dpo": 0.78},
            {"sft": 0.0, "ppo": 3.0, "dpo": 0.9},
        ),
    }
    runs = {}
    for seed, (gold, wins, kl) in figures.items():
        run = tmp_path / f"seed-{seed}"
        (run / "eval").mkdir(parents=True)
        (run / "eval" / "comparison.json").write_text(json.dumps(_comparison(gold, wins, kl)))
        runs[seed] = run
    (runs[4] / "ppo").mkdir()
    (runs[4] / "ppo" / "summary.json").write_text(json.dumps({"kl_flagged_steps": [31, 40]}))
    (runs[4] / "sft").mkdir()
    (runs[4] / "sft" / "summary.json").write_text(json.dumps({"eval": [{"loss": 0.9}, {"loss": 0.2}]}))
    head = {
        "gold_sft": 3.2,
        "reward_model_accuracy": 0.77,
        "overoptimization": [{"line": "PPO: over-optimization: ..."}],
    }
    (runs[4] / "summary.json").write_text(json.dumps({"headline": head}))
    checks = {
        "sft_greedy": {"gold": 3.5, "wrong_fact": 0.1},
        "reward_swapped": {"all": 0.55},
        "reward_left_out": {"all": 0.9},
    }
    (runs[4] / "demo_checks.json").write_text(json.dumps(checks))

    result = aggregate(runs)
    ppo = result["policies"]["ppo"]
    # Mean and sample standard deviation of two values a, b: (a + b) / 2 and |a - b| / sqrt(2).
    assert ppo["gold"]["mean"] == pytest.approx(4.3) and ppo["gold"]["std"] == pytest.approx(0.4 / 2**0.5)
    assert (ppo["gold"]["worst"], ppo["gold"]["worst_seed"]) == (4.1, 4)
    # Quartiles of two values by linear interpolation: a + (b - a) x 1/4, 1/2, 3/4.
    assert [ppo["gold"][k] for k in ("q1", "median", "q3")] == pytest.approx([4.2, 4.3, 4.4])
    assert (ppo["win_rate"]["worst"], ppo["kl"]["worst"], ppo["kl"]["worst_seed"]) == (0.74, 3.0, 4)
    assert "win_rate" not in result["policies"]["sft"]
    assert result["ppo_kl_flagged_steps"] == {3: [], 4: [31, 40]}

    table = sweep_table(result).splitlines()
    assert table[0] == "2 task seeds (3, 4): median, quartiles, mean and worst seed"
    # Per quantity a block; PPO's gold: median 4.3, quartiles 4.2-4.4, mean 4.3, worst 4.1 on seed 4.
    gold_block = table[table.index(next(t for t in table if t.startswith("gold score"))) :]
    assert gold_block[2].split() == ["PPO", "4.300", "4.200-4.400", "4.300", "4.100", "(s4)"]
    win_block = table[table.index(next(t for t in table if t.startswith("win rate over SFT"))) :]
    assert win_block[1].split()[0] == "PPO" and win_block[1].split()[1:4] == ["0.770", "0.755-0.785", "0.770"]
    kl_row = next(t for t in table[table.index(next(t for t in table if t.startswith("KL"))) :] if "PPO" in t)
    assert kl_row.split()[1:] == ["2.000", "1.500-2.500", "2.000", "3.000", "(s4)"]
    # One row per seed: SFT and reward-model figures, then each method's win rate; "-" where missing.
    seed_rows = {t.split()[0]: t.split() for t in table if t.split() and t.split()[0] in {"3", "4"}}
    assert seed_rows["4"] == [
        "4",
        "0.200",
        "3.200",
        "3.500",
        "0.100",
        "0.770",
        "0.550",
        "0.900",
        "0.740",
        "0.780",
    ]
    assert seed_rows["3"] == ["3", *["-"] * 7, "0.800", "0.700"]
    assert table[-2] == "PPO's KL guard fired on 1 of 2 seeds (seed 4: steps 31, 40)"
    assert table[-1] == "seed 4: PPO: over-optimization: ..."
    # Each seed's SFT and reward model, for finding why a seed's win rate is low.
    assert result["per_seed"][4] == {
        "sft_heldout_loss": 0.2,
        "sft_gold": 3.2,
        "sft_gold_greedy": 3.5,
        "sft_greedy_wrong_fact": 0.1,
        "reward_model_accuracy": 0.77,
        "reward_model_swapped": 0.55,
        "reward_model_left_out": 0.9,
        "overoptimization": ["PPO: over-optimization: ..."],
    }
    empty = {k: ([] if k == "overoptimization" else None) for k in result["per_seed"][4]}
    assert result["per_seed"][3] == empty


def test_seeds_must_be_positive():
    from rlhf.config.core import ConfigError

    with pytest.raises(ConfigError, match="`seeds` must be at least 1"):
        load_config(DemoConfig, None, ["seeds=0"])
    with pytest.raises(ConfigError, match=r"`task.hidden_size` \(128\) must divide by `task.heads` \(3\)"):
        load_config(DemoConfig, None, ["task.heads=3"])
