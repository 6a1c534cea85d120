"""A reward run killed after a checkpoint and resumed continues the uninterrupted run exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import kill_at_first_checkpoint, planted_comparisons, write_jsonl
from rlhf.tracking import read_metrics
from rlhf.training import checkpoint as ckpt

RLHF = str(Path(sys.executable).with_name("rlhf"))
ARGS = [
    "data.max_length=64",
    "prompt.template=raw",
    "optimizer.lr=3e-3",
    "optimizer.warmup_steps=2",
    "optimizer.scheduler=cosine",
    "max_steps=8",
    "batch_size=4",
    "save_every=3",
    "peft.method=lora",
    "peft.lora_dropout=0.2",  # dropout draws random numbers: resuming must restore the RNG too
    "eval.fraction=0.25",
    "eval.every=4",
    "logging.log_every=1",
    "logging.progress=false",
    "logging.tensorboard=false",
]


def reward(data: str, run_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [RLHF, "reward", *extra, "--set", f"data.path={data}", *ARGS, f"output_dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out


def scores(model_dir: Path, texts: list[str]) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits.squeeze(-1)


@pytest.mark.slow
def test_killed_reward_run_resumes_on_the_same_curve(tmp_path):
    data = write_jsonl(tmp_path / "prefs.jsonl", planted_comparisons(48))
    whole = finish(reward(data, tmp_path / "whole"))
    assert "[checkpoint] saved" in whole
    expected = json.loads((tmp_path / "whole" / "summary.json").read_text())

    # Kill the second run (SIGKILL: no cleanup) as soon as it reports its first checkpoint.
    proc = reward(data, tmp_path / "killed")
    kill_at_first_checkpoint(proc)
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "killed")] == ["step-000003"]

    out = finish(reward(data, tmp_path / "killed", "--resume"))
    assert "[resume] from" in out and "at step 3" in out
    resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == expected["steps"] == 8
    assert resumed["data"] == expected["data"]
    # The whole loss curve, the steps before the kill restored from the checkpoint's history. Resumed =
    # uninterrupted operation for operation (nothing summed in another order): 1e-6 is only rounding.
    assert resumed["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-6)
    assert resumed["train_accuracy"] == pytest.approx(expected["train_accuracy"], abs=1e-6)
    assert [e["step"] for e in resumed["eval"]] == [e["step"] for e in expected["eval"]] == [0, 4, 8]
    for key in ("loss", "accuracy", "margin", "ece"):
        assert [e[key] for e in resumed["eval"]] == pytest.approx(
            [e[key] for e in expected["eval"]], abs=1e-6
        )
    assert resumed["reward_mean"] == pytest.approx(expected["reward_mean"], abs=1e-6)
    assert resumed["reward_std"] == pytest.approx(expected["reward_std"], abs=1e-6)

    # The final models score alike.
    texts = ["Say the cat. please", "Say a dog. the big red sun", "please please", "runs"]
    ours, theirs = scores(tmp_path / "killed" / "model", texts), scores(tmp_path / "whole" / "model", texts)
    assert torch.allclose(ours, theirs, atol=1e-6), (ours, theirs)
    extra = json.loads((tmp_path / "killed" / "model" / "rlhf_scalar.json").read_text())
    assert extra["reward_mean"] == pytest.approx(resumed["reward_mean"])

    # metrics.jsonl holds each step once: rows the killed run logged after step 3 were dropped.
    logged = [
        [(row["step"], row.get("train/loss"), row.get("eval/loss")) for row in read_metrics(tmp_path / name)]
        for name in ("whole", "killed")
    ]
    assert [row[0] for row in logged[1] if row[1] is not None] == list(range(1, 9))
    assert [row[:1] for row in logged[1]] == [row[:1] for row in logged[0]]
    assert [v for row in logged[1] for v in row[1:] if v is not None] == pytest.approx(
        [v for row in logged[0] for v in row[1:] if v is not None], abs=1e-6
    )
    assert ckpt.list_checkpoints(tmp_path / "killed")[-1].name == "step-000006"
