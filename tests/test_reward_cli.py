"""`rlhf reward` as a user runs it: train with checkpoints, resume, and one-line data errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RLHF = str(Path(sys.executable).with_name("rlhf"))


def rlhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RLHF, *args], capture_output=True, text=True, timeout=300)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.mark.slow
def test_train_checkpoint_resume(tmp_path):
    rows = [{"prompt": f"Q{i}", "chosen": f"yes please {i}", "rejected": f"no {i}"} for i in range(12)]
    data = write_jsonl(tmp_path / "prefs.jsonl", rows)
    run = tmp_path / "run"
    common = (
        f"data.path={data}", "data.max_length=32", "batch_size=4", "save_every=2", "eval.fraction=0.25",
        f"output_dir={run}", "logging.progress=false", "logging.tensorboard=false",
    )  # fmt: skip
    proc = rlhf("reward", "--set", *common, "max_steps=3")  # checkpoints before the last step only
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "9 pairs" in proc.stdout and "[eval] step 3" in proc.stdout
    assert (run / "checkpoints" / "step-000002").is_dir()
    proc = rlhf("reward", "--resume", "--set", *common, "max_steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[resume] from" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["resumed_from_step"] == 2
    extra = json.loads((run / "model" / "rlhf_scalar.json").read_text())
    assert {"reward_mean", "reward_std", "num_completions"} <= set(extra)


@pytest.mark.slow
def test_unknown_label_is_one_line(tmp_path):
    data = write_jsonl(tmp_path / "labels.jsonl", [{"prompt": "Q", "completion": "A", "label": "meh"}])
    proc = rlhf("reward", "--set", f"data.path={data}", f"output_dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "labels.jsonl:1" in lines[0] and "`label`" in lines[0] and "meh" in lines[0], (
        lines
    )


@pytest.mark.slow
def test_example_config_learns_the_bundled_rankings_then_score_and_eval(tmp_path):
    """examples/reward.yaml as a user runs it (shortened), then `rlhf eval reward` and `rlhf score`."""
    run = tmp_path / "run"
    proc = rlhf(
        "reward", "--config", "examples/reward.yaml", "--set", "max_steps=50", "eval.every=0", "save_every=0",
        f"output_dir={run}", "logging.progress=false", "logging.tensorboard=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["pairs"] == 18 * 6 and summary["data"]["eval_pairs"] == 6 * 6
    assert summary["final_eval"]["accuracy"] >= 0.85, summary["final_eval"]
    proc = rlhf(
        "eval", "reward", "--model", str(run / "model"), "--data", "src/rlhf/assets/demo/rankings.jsonl"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "144" in proc.stdout and "better one ranked #3" in proc.stdout
    out = tmp_path / "scores.jsonl"
    proc = rlhf("score", "--model", str(run / "model"), "--data", "src/rlhf/assets/demo/demonstrations.jsonl",
                "--output", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 24 and all(isinstance(r["reward"], float) for r in rows)
    assert "scored 24 completions of 24 demonstration records" in proc.stdout
