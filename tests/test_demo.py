"""End to end: `rlhf demo` as a user runs it, and what it leaves in its run directory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.tracking import read_metrics

RLHF = str(Path(sys.executable).with_name("rlhf"))


def run_demo(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [RLHF, "demo", "--set", f"logging.output_dir={run_dir}", "logging.progress=false", *overrides]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_demo_trains_saves_reloads_and_answers(tmp_path):
    run_dir = tmp_path / "demo"
    proc = run_demo(run_dir, "logging.log_every=50")
    summary = json.loads((run_dir / "summary.json").read_text())
    # The tiny model learns the bundled demonstrations: loss falls from ~ln(512) to near zero.
    assert summary["loss_first"] > 5.0
    assert summary["loss_last"] < 0.2
    # The saved directory reloads with plain transformers and gives the same logits.
    assert summary["reload_max_logit_diff"] < 1e-5
    assert summary["exact_answers"] >= 3
    assert (run_dir / "model" / "config.json").is_file()
    # The run directory holds the resolved config, the environment and the metrics.
    assert "# Optimizer steps to train." in (run_dir / "config.yaml").read_text()
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["seed"] == 0 and env["packages"]["transformers"]
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [50, 100, 150, 200, 250, 300]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    # The printed summary names what happened at each stage.
    for tag in ("[data]", "[model]", "[train]", "[save]", "[done]"):
        assert tag in proc.stdout


@pytest.mark.slow
def test_demo_with_qlora_trains_and_saves_an_adapter(tmp_path):
    run_dir = tmp_path / "q"
    proc = run_demo(run_dir, "peft.method=qlora", "steps=30", "optimizer.lr=1e-2")
    assert "(peft: qlora)" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["loss_last"] < summary["loss_first"]
    assert (run_dir / "model" / "adapter_config.json").is_file()
