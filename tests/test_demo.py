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
def test_smaller_demo_beats_sft_by_the_gold_score(tmp_path):
    run = tmp_path / "run"
    # The demo's own SFT (copying facts must be learned) and PPO; less feedback and fewer PPO steps.
    smaller = [
        f"pipeline.output_dir={run}", "task.candidate_prompts=300", "task.eval_prompts=120",
        "pipeline.reward.max_steps=250", "pipeline.ppo.steps=40",
    ]  # fmt: skip
    proc = subprocess.run([RLHF, "demo", "--set", *smaller], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    head = summary["headline"]
    assert head["gold_policy"] > head["gold_sft"], head
    assert head["win_rate_gold"] > 0.5, head
    # Simulated labelers disagree about as often as people: agreement well above chance, well below 1.
    assert 0.6 < head["labeler_raw_agreement"] < 0.9, head
    assert head["reward_model_accuracy"] > 0.6, head
    # What the user is told: the table and the report's path.
    assert "win rate over SFT, by gold" in proc.stdout and "labeler agreement" in proc.stdout
    assert f"report: {run / 'report.html'}" in proc.stdout
    assert (run / "report.html").stat().st_size > 10_000
    # The eval's gold scores are the gold rule applied to what each policy wrote.
    rows = [json.loads(line) for line in (run / "eval" / "samples.jsonl").read_text().splitlines()]
    assert [r["policy_scores"]["gold"] for r in rows] == gold_score(
        [r["prompt"] for r in rows], [r["policy"] for r in rows]
    )

    # Every method from the same SFT model and feedback, side by side on the same held-out documents.
    comparison = json.loads((run / "eval" / "comparison.json").read_text())
    assert list(comparison["policies"]) == ["sft", "ppo", "dpo", "rrhf", "best_of_n", "rejection_sampling"]
    assert "the methods side by side" in proc.stdout and "rejection sampling" in proc.stdout
    gold_sft = comparison["policies"]["sft"]["scores"]["gold"]["mean"]
    assert gold_sft == pytest.approx(head["gold_sft"])
    # Best-of-4 by the reward model picks better answers than one sample, by the gold rule too.
    assert comparison["policies"]["best_of_n"]["scores"]["gold"]["mean"] > gold_sft
    assert "Methods compared" in (run / "report.html").read_text()

    # A second run finds every stage finished and only prints the table again.
    again = subprocess.run([RLHF, "demo", "--set", *smaller], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped") == 11


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
