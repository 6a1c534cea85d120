"""`rlhf pipeline` with `rounds`: each round samples from the current policy on prompts of its own,
labels the pairs the previous reward model is least sure of, retrains the reward model on all
feedback so far from the previous one, and runs PPO from the current policy leashed to SFT."""

import json
from pathlib import Path

import pytest

from helpers import pipeline_config as config
from helpers import statuses
from rlhf.pipeline.run import run_pipeline

pytestmark = pytest.mark.slow

ROUNDS = ["rounds=2", "feedback.select=uncertainty", "feedback.budget=4", "feedback.per_prompt=2"]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_rounds_of_simulated_feedback_then_a_rerun_skips_both(tmp_path, browser):
    cfg = config(tmp_path, *ROUNDS)
    run = Path(cfg.output_dir)
    summary = run_pipeline(cfg, log=lambda _: None)
    r0, r1 = run / "round_0", run / "round_1"
    # Prompts of their own: the 8 generate prompts in two halves, in file order.
    first, second = rows(r0 / "prompts.jsonl"), rows(r1 / "prompts.jsonl")
    assert len(first) == len(second) == 4 and not {p["prompt"] for p in first} & {p["prompt"] for p in second}
    assert {r["prompt"] for r in rows(r1 / "generate" / "candidates.jsonl")} == {p["prompt"] for p in second}
    # SFT once; round 1 samples from round 0's policy, PPO leashed to the SFT model.
    assert (r0 / "sft" / "model").is_dir() and not (r1 / "sft").exists()
    ppo1 = json.loads((r1 / "pipeline_state.json").read_text())
    assert "ppo" in ppo1 and statuses(summary["rounds_summaries"][1])["sft"] == "input"
    resolved = (r1 / "config.yaml").read_text()
    assert (
        f"start_policy: {r0 / 'ppo' / 'policy'}" in resolved
        and f"sft_model: {r0 / 'sft' / 'model'}" in resolved
    )
    # Round 0 has no reward model to be unsure with: random; round 1 reads round 0's.
    fb0, fb1 = (json.loads((r / "feedback" / "feedback.json").read_text()) for r in (r0, r1))
    assert fb0["selection"]["rule"] == "random" and fb1["selection"]["rule"] == "uncertainty"
    assert fb1["selection"]["mean_distance_from_even"] is not None
    # 3 training prompts a round, at most 2 pairs each, 4 in the budget.
    assert fb0["train_rows"] <= 4 and fb1["train_rows"] <= 4
    new, all_pairs = rows(r1 / "feedback" / "new_pairs.jsonl"), rows(r1 / "feedback" / "pairs.jsonl")
    assert all_pairs == rows(r0 / "feedback" / "pairs.jsonl") + new
    # The reward model of round 0 and of round 1 on round 1's new held-out pairs.
    on_new = json.loads((r1 / "reward_eval" / "new_samples.json").read_text())
    assert set(on_new) == {"before", "after"} and on_new["before"]["accuracy"] is not None
    table = json.loads((run / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in table] == [0, 1] and table[1]["rm_accuracy_new_before"] is not None
    assert all(r["kl"] is not None and r["gold_policy"] is not None for r in table)
    page = (run / "report.html").read_text()
    assert "RLHF in rounds" in page and 'href="round_1/report.html"' in page
    # Nothing changed: both rounds are skipped stage by stage.
    again = run_pipeline(cfg, log=lambda _: None)
    for round_summary in again["rounds_summaries"]:
        assert set(statuses(round_summary).values()) <= {"skipped (finished)", "input"}
    _rounds_report_in_chromium(browser, run / "report.html")


def _rounds_report_in_chromium(browser, report: Path) -> None:
    """The rounds page in headless Chromium: its table, both figures decoded, nothing fetched but
    its own file and `data:` URIs, no error; each round's report one click away."""
    from helpers import open_report

    page, seen = open_report(browser, report)
    assert page.locator("h1").inner_text() == "RLHF in rounds"
    assert page.locator("#rounds table tbody tr").count() == 2
    assert page.locator("#rounds table th").nth(5).inner_text() == "previous reward model on the new samples"
    sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
    assert len(sizes) == 2 and all(done and width > 0 for done, width in sizes), sizes
    page.locator('a[href="round_1/report.html"]').click()
    page.wait_for_load_state("load")
    assert page.locator("h1").inner_text() == "RLHF run report" and page.url.endswith("round_1/report.html")
    page.close()
    assert not seen["console"] and not seen["errors"], seen
    assert all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]


def test_disagreement_reads_the_previous_rounds_ensemble(tmp_path):
    """`reward_ensemble: 2`: each round trains a second reward model on a bootstrap resample; the
    next round's `disagreement` rule reads both and picks the pairs they split on."""
    more = ["rounds=2", "reward_ensemble=2", "feedback.select=disagreement", "feedback.budget=3"]
    cfg = config(tmp_path, *more)
    run = Path(cfg.output_dir)
    run_pipeline(cfg, log=lambda _: None)
    member = run / "round_0" / "reward" / "ensemble_1"
    assert (member / "model" / "config.json").is_file()
    resample, pairs = rows(member / "pairs.jsonl"), rows(run / "round_0" / "feedback" / "pairs.jsonl")
    assert len(resample) == len(pairs) and all(
        r in pairs for r in resample
    )  # drawn from them, with replacement
    fb0, fb1 = (json.loads((run / f"round_{r}" / "feedback" / "feedback.json").read_text()) for r in (0, 1))
    assert fb0["selection"]["rule"] == "random"  # nothing to disagree with yet
    assert fb1["selection"]["rule"] == "disagreement" and fb1["selection"]["models"] == 2
    assert fb1["selection"]["mean_spread"] is not None and fb1["train_rows"] <= 3
