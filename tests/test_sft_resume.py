"""Checkpoints: atomic on disk, and a killed-then-resumed run continues the same loss curve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import kill_at_first_checkpoint
from rlhf.training import checkpoint as ckpt

RLHF = str(Path(sys.executable).with_name("rlhf"))
DEMO = "src/rlhf/assets/demo/demonstrations.jsonl"
ARGS = [
    f"data.path={DEMO}",
    "data.max_length=96",
    "optimizer.lr=3e-3",
    "optimizer.warmup_steps=2",
    "optimizer.scheduler=cosine",
    "max_steps=10",
    "batch_size=4",
    "save_every=4",
    "peft.method=lora",
    "peft.lora_dropout=0.2",  # dropout draws random numbers: resuming must restore the RNG too
    "eval.fraction=0.2",
    "eval.every=5",
    "logging.progress=false",
    "logging.tensorboard=false",
]


def sft(run_dir: Path, *extra: str, **popen) -> subprocess.Popen:
    cmd = [RLHF, "sft", *extra, "--set", *ARGS, f"output_dir={run_dir}"]
    return subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_killed_run_resumes_on_the_same_loss_curve(tmp_path):
    whole = finish(sft(tmp_path / "whole"))
    assert "[checkpoint] saved" in whole
    expected = json.loads((tmp_path / "whole" / "summary.json").read_text())

    # Kill the second run (SIGKILL: no cleanup) as soon as it reports its first checkpoint.
    proc = sft(tmp_path / "killed")
    kill_at_first_checkpoint(proc)
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "killed")] == ["step-000004"]

    out = finish(sft(tmp_path / "killed", "--resume"))
    assert "[resume] from" in out and "at step 4" in out
    resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert resumed["resumed_from_step"] == 4 and resumed["resumed"] and not expected["resumed"]
    # The summary counts the whole run, the part before the kill included.
    assert resumed["train_tokens"] == expected["train_tokens"]
    assert "(resumed at step 4; counts cover the whole run)" in out
    # Resumed = uninterrupted operation for operation (weights, optimizer, RNG, data position restored):
    # nothing is summed in another order, so 1e-6 on losses of ~6 is only the log's rounding.
    assert resumed["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-6)
    assert [e["loss"] for e in resumed["eval"]] == pytest.approx(
        [e["loss"] for e in expected["eval"]], abs=1e-6
    )
    # metrics.jsonl holds each step once: rows the killed run logged after step 4 were dropped.
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").open()]
    train_steps = [
        s for s, line in zip(steps, (tmp_path / "killed" / "metrics.jsonl").open()) if "train/loss" in line
    ]
    assert train_steps == sorted(set(train_steps))
    assert ckpt.list_checkpoints(tmp_path / "killed")[-1].name == "step-000008"


def test_a_save_that_dies_midway_leaves_no_checkpoint(tmp_path, monkeypatch):
    """The crash happens after the model is written but before the optimizer state."""
    import torch

    from rlhf.config import OptimizerConfig
    from rlhf.models import build_tiny_model
    from rlhf.training import make_accelerator

    accelerator = make_accelerator(OptimizerConfig())
    model, tok = build_tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    kwargs = dict(model=model, optimizer=optimizer, scheduler=None, tokenizer=tok, state={})
    ckpt.save_checkpoint(accelerator, tmp_path, 1, **kwargs)

    real_save = torch.save

    def dying_save(obj, path, *a, **k):
        if str(path).endswith("optimizer.pt"):
            raise KeyboardInterrupt("killed while saving")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(accelerator, tmp_path, 2, **kwargs)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    # Only the complete checkpoint counts, and the half-written one is gone: an interrupted save
    # removes its staging directory.
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000001"]
    assert not list((tmp_path / "checkpoints").glob(".step-000002.tmp-*"))
    # A process killed outright (SIGKILL) leaves its staging directory: the next save clears it.
    (tmp_path / "checkpoints" / ".step-000002.tmp-deadbeef" / "model").mkdir(parents=True)
    ckpt.save_checkpoint(accelerator, tmp_path, 3, **kwargs, keep=1)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000003"]
    with pytest.raises(ckpt.CheckpointError, match="not a complete checkpoint"):
        ckpt.load_checkpoint(
            accelerator, tmp_path / "checkpoints", model=model, optimizer=optimizer, scheduler=None
        )
