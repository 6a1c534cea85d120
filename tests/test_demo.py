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
    # The spread over seeds, as the README shows it.
    assert "2 task seeds (0, 1): mean ± std over seeds, worst seed in brackets" in proc.stdout
    assert "KL guard fired" in proc.stdout

    # A second sweep finds every stage of every seed finished and only prints the tables again.
    again = subprocess.run(
        [RLHF, "demo", "--seeds", "2", "--set", *smaller], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped") == 2 * 11


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


def test_the_sweep_table_gives_mean_std_and_worst_seed(tmp_path):
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
    assert table[0] == "2 task seeds (3, 4): mean ± std over seeds, worst seed in brackets"
    row = next(line for line in table if line.startswith("PPO"))
    assert (
        "4.300 ± 0.283 [4.100 s4]" in row
        and "0.770 ± 0.042 [0.740 s4]" in row
        and "2.000 ± 1.414 [3.000 s4]" in row
    )
    assert table[-2] == "PPO's KL guard fired on 1 of 2 seeds (seed 4: steps 31, 40)"
    assert table[-1] == "seed 4: PPO: over-optimization: ..."
    # Each seed's SFT and reward model, for finding why a seed's win rate is low.
    assert result["per_seed"][4] == {"sft_heldout_loss": 0.2, "sft_gold": 3.2, "reward_model_accuracy": 0.77,
                                     "overoptimization": ["PPO: over-optimization: ..."]}  # fmt: skip
    assert result["per_seed"][3] == {"sft_heldout_loss": None, "sft_gold": None, "reward_model_accuracy": None,
                                     "overoptimization": []}  # fmt: skip


def test_seeds_must_be_positive():
    from rlhf.config.core import ConfigError

    with pytest.raises(ConfigError, match="`seeds` must be at least 1"):
        load_config(DemoConfig, None, ["seeds=0"])
