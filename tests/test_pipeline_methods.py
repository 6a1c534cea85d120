"""`rlhf pipeline` with several methods as the last stage: PPO, DPO, RRHF, best-of-N and rejection
sampling from the same SFT model and feedback, evaluated side by side; the comparison's math."""

import json
from pathlib import Path

import pytest

from helpers import pipeline_config as config
from helpers import statuses
from rlhf.config.core import ConfigError
from rlhf.eval.compare import compare, comparison_table
from rlhf.pipeline.run import run_pipeline

ALL = "methods=[ppo, dpo, rrhf, best_of_n, rejection_sampling]"
SMALL = [
    "dpo.max_steps=2", "dpo.batch_size=2", "dpo.data.max_length=96", "dpo.logging.progress=false",
    "rrhf.max_steps=2", "rrhf.batch_size=2", "rrhf.data.max_length=96", "rrhf.logging.progress=false",
    "best_of_n.n=3", "rejection_sampling.n=2", "rejection_sampling.sampling.max_new_tokens=8",
    "rejection_sampling.data.limit=4", "rejection_sampling.sft.max_steps=2", "rejection_sampling.sft.batch_size=2",
    "rejection_sampling.sft.data.max_length=96", "rejection_sampling.sft.logging.progress=false",
]  # fmt: skip


@pytest.mark.slow
def test_every_method_from_the_same_sft_model_and_feedback_side_by_side(tmp_path):
    cfg = config(tmp_path, ALL, *SMALL)
    run = Path(cfg.output_dir)
    first = run_pipeline(cfg, log=lambda _: None)
    assert set(statuses(first).values()) == {"ran"}
    assert list(statuses(first)) == [
        "sft", "generate", "feedback", "reward", "ppo", "dpo", "rrhf", "best_of_n", "rejection_sampling",
        "eval", "report",
    ]  # fmt: skip
    # DPO learned from the feedback's training pairs, RRHF from the candidates, both from the SFT model.
    dpo_summary = json.loads((run / "dpo" / "summary.json").read_text())
    assert dpo_summary["data"]["pairs"] > 0 and dpo_summary["final_eval"] is not None
    assert (run / "rrhf" / "policy" / "model.safetensors").is_file()
    assert (run / "rejection_sampling" / "sft" / "model" / "model.safetensors").is_file()
    rows = [
        json.loads(line) for line in (run / "rejection_sampling" / "best_of_n.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 4 and all(r["reward"] == max(r["rewards"]) and r["best_of"] == 2 for r in rows)
    # Every policy answered the same prompts; the comparison has all of them, SFT included.
    comparison = json.loads((run / "eval" / "comparison.json").read_text())
    assert list(comparison["policies"]) == ["sft", "ppo", "dpo", "rrhf", "best_of_n", "rejection_sampling"]
    best = comparison["policies"]["best_of_n"]
    assert best["samples_per_answer"] == 3 and best["kl_kind"] == "analytic"
    assert best["kl"] == pytest.approx(1.0986123 - 2 / 3, abs=1e-6)
    for name in ("ppo", "dpo", "rrhf", "rejection_sampling"):
        assert comparison["policies"][name]["kl_kind"] == "sampled"
        assert comparison["policies"][name]["compute"]["seconds"] > 0
    assert comparison["policies"]["dpo"]["compute"]["uses_reward_model"] is False
    gold = comparison["win_rates"]["gold"]
    for a in comparison["policies"]:
        for b in comparison["policies"]:
            if a != b:  # a beats b exactly as often as b loses to a
                assert gold[a][b]["rate"] == pytest.approx(1 - gold[b][a]["rate"])
                assert gold[a][b]["n"] == 6
    # The headline and the report show them side by side.
    summary = json.loads((run / "summary.json").read_text())
    assert summary["headline"]["method"] == "PPO" and "comparison" in summary["headline"]
    page = (run / "report.html").read_text()
    assert "Methods compared" in page and "rejection sampling" in page and "best-of-N" in page
    # Rerun: everything skipped; dropping a method reruns only the evaluation and the report.
    assert set(statuses(run_pipeline(cfg, log=lambda _: None)).values()) == {"skipped (finished)"}
    fewer = statuses(run_pipeline(config(tmp_path, "methods=[dpo, best_of_n]", *SMALL), log=lambda _: None))
    assert [s for s, v in fewer.items() if v == "ran"] == ["eval", "report"]
    assert "ppo" not in fewer
    comparison = json.loads((run / "eval" / "comparison.json").read_text())
    assert list(comparison["policies"]) == ["sft", "dpo", "best_of_n"]
    # The first method is the headline policy, evaluated against SFT in eval/ itself.
    assert json.loads((run / "eval" / "eval.json").read_text())["policy"].endswith("dpo/policy")


def test_methods_must_be_known_and_given_once(tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'sac'"):
        config(tmp_path, "methods=[ppo, sac]")
    with pytest.raises(ConfigError, match="each method once"):
        config(tmp_path, "methods=[dpo, dpo]")
    with pytest.raises(ConfigError, match="at least 2"):
        config(tmp_path, "best_of_n.n=1")


def _write_eval(directory: Path, rows: list[dict], result: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (directory / "eval.json").write_text(json.dumps(result))


def test_comparison_by_hand(tmp_path):
    """Three prompts: PPO 2, 0, 1 against SFT 1, 1, 1 and DPO 2, 1, 2 (gold scores)."""
    ppo, sft, dpo = [2.0, 0.0, 1.0], [1.0, 1.0, 1.0], [2.0, 1.0, 2.0]
    _write_eval(
        tmp_path,
        [{"policy_scores": {"gold": a}, "baseline_scores": {"gold": b}} for a, b in zip(ppo, sft)],
        {"kl": {"sequence": {"mean": 1.5, "stderr": 0.1}, "analytic": False}},
    )
    _write_eval(
        tmp_path / "dpo", [{"policy_scores": {"gold": a}} for a in dpo], {"kl": {"sequence": {"mean": 0.5}}}
    )
    result = compare(tmp_path, ["ppo", "dpo"], {"ppo": {"seconds": 10.0}, "dpo": {"seconds": 2.0}})
    gold = result["win_rates"]["gold"]
    assert gold["ppo"]["sft"]["rate"] == pytest.approx(0.5)  # a win, a loss, a tie
    assert (gold["ppo"]["sft"]["wins"], gold["ppo"]["sft"]["ties"], gold["ppo"]["sft"]["losses"]) == (1, 1, 1)
    assert gold["dpo"]["ppo"]["rate"] == pytest.approx(2.5 / 3)  # tie, win, win
    assert gold["ppo"]["dpo"]["rate"] == pytest.approx(0.5 / 3)
    assert result["policies"]["ppo"]["scores"]["gold"]["mean"] == pytest.approx(1.0)
    assert result["policies"]["dpo"]["kl"] == 0.5 and result["policies"]["sft"]["kl"] == 0.0
    text = comparison_table(result)
    assert "SFT" in text and "PPO" in text and "DPO" in text and "10" in text
