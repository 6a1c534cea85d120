"""`rlhf ppo` as a user runs it: the bundled example, the printed config, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RLHF = str(Path(sys.executable).with_name("rlhf"))
ROOT = Path(__file__).resolve().parent.parent


def rlhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RLHF, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_the_bundled_example_runs(tmp_path):
    run = tmp_path / "run"
    proc = rlhf(
        "ppo", "--config", "examples/ppo.yaml", "--set", "max_steps=3", "save_every=2", f"output_dir={run}",
        "logging.progress=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[reward] letter_e (weight 1, normalize none)" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and len(summary["reward"]) == 3
    assert (run / "checkpoints" / "step-000002" / "extra.pt").is_file()
    assert (run / "policy" / "config.json").is_file()


@pytest.mark.slow
def test_print_config_documents_every_group():
    proc = rlhf("ppo", "--print-config")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for key in (
        "rollout:",
        "reward:",
        "kl:",
        "advantage:",
        "loss:",
        "critic:",
        "guards:",
        "no_eos_penalty",
        "ptx_coef",
    ):
        assert key in proc.stdout


@pytest.mark.slow
def test_a_broken_reward_function_is_one_line(tmp_path):
    module = tmp_path / "short.py"
    module.write_text("def score(prompts, completions):\n    return [1.0]\n")
    proc = rlhf(
        "ppo", "--set", "data.path=src/rlhf/assets/demo/demonstrations.jsonl", f"reward.function={module}:score",
        "peft.method=none", "max_steps=1", "rollout.prompts_per_step=2", "minibatch_size=2",
        f"output_dir={tmp_path / 'run'}", "logging.progress=false",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "returned 1 rewards for 2 completions" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_no_reward_is_a_config_error(tmp_path):
    proc = rlhf(
        "ppo",
        "--set",
        "data.path=src/rlhf/assets/demo/demonstrations.jsonl",
        f"output_dir={tmp_path}",
    )
    assert proc.returncode == 2
    assert not (tmp_path / "config.yaml").exists()  # refused before anything was written
    assert "rlhf ppo needs a reward" in proc.stderr
