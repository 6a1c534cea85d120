"""A real 2-process run (torchrun, gloo on CPU) of the shared Accelerate training loop."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.tracking import read_metrics

SCRIPT = Path(__file__).parent / "dist" / "train_step.py"


def dist_env() -> dict[str, str]:
    # Gloo on the loopback interface: a hostname that resolves to another address can stall it.
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GLOO_SOCKET_IFNAME": "lo",
    }


@pytest.mark.slow
def test_two_process_gloo_training_step(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dist_env()
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,  # the script's collectives time out after 60 s, so this only catches a stuck launcher
    )
    assert proc.returncode == 0, proc.stderr[-6000:]  # on a hang: the faulthandler stacks of the ranks
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    for rep in reports:
        assert rep["num_processes"] == 2
        assert rep["steps"] == 4
        assert rep["changed_tensors"] == rep["total_tensors"]
    assert "gloo" in reports[0]["backend"]
    # The two processes read disjoint shards that together cover the data ...
    assert not set(reports[0]["seen"]) & set(reports[1]["seen"])
    assert set(reports[0]["seen"]) | set(reports[1]["seen"]) == set(range(16))
    # ... and all-reduced gradients kept their weights identical.
    assert reports[0]["checksum"] == reports[1]["checksum"]
    # Logged losses are averaged over processes, so both ranks report the same numbers.
    assert reports[0]["losses"] == pytest.approx(reports[1]["losses"])
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]


SFT_ARGS = [
    "data.path=src/rlhf/assets/demo/demonstrations.jsonl",
    "data.max_length=96",
    "optimizer.lr=3e-3",
    "max_steps=6",
    "eval.fraction=0.2",
    "eval.every=3",
    "logging.progress=false",
    "logging.tensorboard=false",
]


@pytest.mark.slow
def test_two_process_sft_matches_one_process_with_the_same_global_batch(tmp_path):
    """torchrun x2 with batch 2 per process = one process with batch 4: same rows, same token weighting."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dist_env()
    two = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rlhf.cli.main", "sft", "--set",
         *SFT_ARGS, "batch_size=2", f"logging.output_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run(
        [str(Path(sys.executable).with_name("rlhf")), "sft", "--set", *SFT_ARGS, "batch_size=4",
         f"logging.output_dir={tmp_path / 'one'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-4000:]
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two")]
    assert summaries[1]["train_loss"] == pytest.approx(summaries[0]["train_loss"], abs=1e-5)
    assert [e["loss"] for e in summaries[1]["eval"]] == pytest.approx(
        [e["loss"] for e in summaries[0]["eval"]], abs=1e-5
    )
    assert summaries[1]["train_tokens"] == summaries[0]["train_tokens"]
    # Only the main process wrote the model, and it loads.
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "model")
