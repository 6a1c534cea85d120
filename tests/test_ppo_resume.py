"""A PPO run killed after a checkpoint and resumed continues the uninterrupted run exactly: the
policy and its adapter, the value head, both optimizers, the adaptive KL coefficient, the running
reward statistics, the prompt stream position and the sampling RNG all come back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import kill_at_first_checkpoint
from rlhf.tracking import read_metrics
from rlhf.training import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
RLHF = str(Path(sys.executable).with_name("rlhf"))
STEPS = 6
SAMPLES = 4  # samples_count: rows of samples.jsonl per step

# The example reward, slowed to a halt at one call when PPO_TEST_STALL_AT says so: the test then
# kills the run at a known place (after step 4 was logged, before step 5), whatever the load.
STALLING_REWARD = f"""
import importlib.util, os, time

_spec = importlib.util.spec_from_file_location("_example_rewards", {str(REPO / "examples" / "rewards.py")!r})
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
_calls = 0


def letter_e(prompts, completions):
    global _calls
    _calls += 1
    if _calls == int(os.environ.get("PPO_TEST_STALL_AT", "0")):
        time.sleep(600)
    return _module.letter_e(prompts, completions)
"""


def args(reward: str) -> list[str]:
    return [
        "model.path=builtin:tiny",
        f"data.path={REPO / 'src/rlhf/assets/demo/demonstrations.jsonl'}",
        "data.max_length=96",
        # running normalization: its statistics must come back from the checkpoint
        f'reward.sources=[{{function: "{reward}", normalize: running}}]',
        f"max_steps={STEPS}",
        "save_every=3",
        "rollout.prompts_per_step=4",
        "rollout.samples_per_prompt=2",
        "rollout.sampling.max_new_tokens=6",
        "minibatch_size=4",
        "ppo_epochs=2",
        "optimizer.lr=1e-3",
        "peft.method=lora",
        # adaptive with a short horizon and a small target: beta moves by several % per step
        "kl.controller=adaptive",
        "kl.target=0.01",
        "kl.horizon=20",
        "samples_every=1",
        f"samples_count={SAMPLES}",
        "logging.log_every=1",
        "logging.progress=false",
        "logging.tensorboard=false",
    ]


def ppo(
    run_dir: Path, reward: str, *flags: str, overrides: tuple[str, ...] = (), stall_at: int = 0
) -> subprocess.Popen:
    cmd = [RLHF, "ppo", *flags, "--set", *args(reward), *overrides, f"output_dir={run_dir}"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PPO_TEST_STALL_AT": str(stall_at),
    }
    return subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out


def wait_for_samples_row(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the run has logged the samples of `step` (the last thing a step logs)."""
    deadline = time.time() + timeout
    path = run_dir / "metrics.jsonl"
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        if path.is_file() and any(
            row["step"] == step and "ppo/samples" in row for row in read_metrics(path) if row
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"step {step} was not logged within {timeout} s")


def steps_logged(run_dir: Path, key: str) -> list[int]:
    return [row["step"] for row in read_metrics(run_dir) if key in row]


def samples(run_dir: Path) -> list[dict]:
    lines = (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_killed_ppo_run_resumes_on_the_same_curve(tmp_path):
    reward_file = tmp_path / "stalling_rewards.py"
    reward_file.write_text(STALLING_REWARD, encoding="utf-8")
    reward = f"{reward_file}:letter_e"
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"

    whole = finish(ppo(whole_dir, reward))
    assert "[checkpoint] saved" in whole
    expected = json.loads((whole_dir / "summary.json").read_text())
    assert expected["steps"] == STEPS and expected["resumed_from_step"] == 0
    # The adaptive controller really moved beta (so restoring it matters).
    assert abs(expected["beta"][-1] - expected["beta"][0]) > 1e-3

    # The second run stalls in step 5's reward (one reward call per step); it is SIGKILLed (no
    # cleanup) once it has logged step 4, past its checkpoint at step 3.
    proc = ppo(killed_dir, reward, stall_at=5)
    wait_for_samples_row(killed_dir, 4, proc)
    kill_at_first_checkpoint(proc)
    assert not (killed_dir / "summary.json").exists()
    assert [p.name for p in ckpt.list_checkpoints(killed_dir)] == ["step-000003"]
    assert (killed_dir / "checkpoints" / "step-000003" / "extra.pt").is_file()
    # The rows of step 4 are there before the resume, to be dropped by it.
    assert steps_logged(killed_dir, "ppo/reward/normalized") == [1, 2, 3, 4]
    assert [row["step"] for row in samples(killed_dir)] == [s for s in range(1, 5) for _ in range(SAMPLES)]

    out = finish(ppo(killed_dir, reward, "--resume"))
    assert "[resume] from" in out and "at step 3" in out
    assert "[resume] warning" not in out  # the same config
    resumed = json.loads((killed_dir / "summary.json").read_text())
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == STEPS
    # The whole per-step history: steps 1-3 from the checkpoint, 4-6 computed again after the resume,
    # operation for operation as the uninterrupted run (same shapes, order, restored RNG and optimizer):
    # 1e-5 admits only rounding where a restored float32 state is read back.
    for key in ("reward", "raw_reward", "kl", "beta", "policy_loss", "value_loss"):
        assert len(resumed[key]) == STEPS, key
        assert resumed[key] == pytest.approx(expected[key], abs=1e-5, rel=1e-5), key

    # metrics.jsonl holds each step exactly once (the killed run's step 4 was dropped), with the
    # uninterrupted run's numbers.
    for key in ("ppo/reward/normalized", "ppo/samples"):
        assert steps_logged(killed_dir, key) == list(range(1, STEPS + 1)), key
    whole_rows, killed_rows = read_metrics(whole_dir), read_metrics(killed_dir)
    for key in ("ppo/reward/normalized", "ppo/kl", "ppo/beta", "ppo/value_loss", "ppo/grad_norm"):
        ours = [row[key] for row in killed_rows if key in row]
        theirs = [row[key] for row in whole_rows if key in row]
        assert ours == pytest.approx(theirs, abs=1e-5, rel=1e-5), key

    # samples.jsonl: each step's rows once, and the same completions (the sampling RNG came back).
    got, want = samples(killed_dir), samples(whole_dir)
    assert Counter(row["step"] for row in got) == {s: SAMPLES for s in range(1, STEPS + 1)}
    assert [(r["step"], r["completion"]) for r in got] == [(r["step"], r["completion"]) for r in want]
    assert [r["reward"] for r in got] == pytest.approx([r["reward"] for r in want], abs=1e-5)

    # The final outputs were written.
    assert (killed_dir / "policy").is_dir() and (killed_dir / "critic").is_dir()


@pytest.mark.slow
def test_resuming_from_a_checkpoint_without_extra_pt_is_a_one_line_error(tmp_path):
    run_dir = tmp_path / "run"
    reward = f"{REPO / 'examples' / 'rewards.py'}:letter_e"
    short = ("max_steps=2", "save_every=1")
    finish(ppo(run_dir, reward, overrides=short))
    checkpoint = run_dir / "checkpoints" / "step-000001"
    (checkpoint / "extra.pt").unlink()
    shutil.rmtree(run_dir / "policy")
    metrics = (run_dir / "metrics.jsonl").read_text()

    proc = ppo(run_dir, reward, "--resume", overrides=short)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert "extra.pt" in errors[0] and "step-000001" in errors[0]
    assert not (run_dir / "policy").exists()  # it stopped before training
    assert (run_dir / "metrics.jsonl").read_text() == metrics  # and before trimming the run's metrics
