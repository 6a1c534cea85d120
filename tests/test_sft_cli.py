"""`rlhf sft` as a user runs it: the example config, then export and generate on its output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RLHF = str(Path(sys.executable).with_name("rlhf"))
DEMO = "src/rlhf/assets/demo/demonstrations.jsonl"


def rlhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RLHF, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_example_config_then_export_then_generate(tmp_path):
    run = tmp_path / "sft"
    proc = rlhf(
        "sft", "--config", "examples/sft.yaml", "--set", "max_steps=6", "eval.every=3", "save_every=3",
        f"eval.path={DEMO}", "eval.generations=1", "eval.max_new_tokens=4", f"output_dir={run}",
        "logging.progress=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[eval] step 6" in proc.stdout and "[checkpoint] saved" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert [e["step"] for e in summary["eval"]] == [0, 3, 6]
    assert (run / "model" / "adapter_config.json").is_file()  # LoRA: the adapter, naming its base
    assert (run / "checkpoints" / "step-000003" / "optimizer.pt").is_file()

    merged = tmp_path / "merged"
    proc = rlhf("export", str(run / "model"), str(merged), "--merge")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (merged / "adapter_config.json").exists()

    out = tmp_path / "candidates.jsonl"
    proc = rlhf(
        "generate", "--model", str(merged), "--prompts", DEMO, "--samples-per-prompt", "2",
        "--max-new-tokens", "6", "--output", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 24 and all(len(row["completions"]) == 2 for row in rows)
    # Generation renders prompts exactly as SFT did (the instruction template for text prompts).
    assert rows[0]["rendered_prompt"].startswith("### Instruction:\n")


@pytest.mark.slow
def test_bad_data_is_one_line_naming_file_line_and_field(tmp_path):
    bad = tmp_path / "demos.jsonl"
    bad.write_text('{"prompt": "Hi", "completion": "Hello"}\n{"prompt": "Yo", "completion": 3}\n')
    proc = rlhf("sft", "--set", f"data.path={bad}", f"output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {bad}:2: field `completion`"), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_wrong_kind_and_impossible_settings_are_one_line(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}\n')
    proc = rlhf("sft", "--set", f"data.path={pairs}", f"output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "expects sft data" in proc.stderr, proc.stderr
    proc = rlhf("sft", "--set", "peft.method=prompt_tuning", "packing=true")
    assert proc.returncode == 2 and "packing" in proc.stderr.strip().splitlines()[-1]
    proc = rlhf("sft", "--set", "peft.method=lora", "freeze.train_last_layers=1")
    assert proc.returncode == 2 and "peft.method: none" in proc.stderr


@pytest.mark.slow
def test_a_diverging_run_stops_with_an_error_and_writes_no_model(tmp_path):
    """lr 1e30 blows the weights up after one step; every later loss is NaN: the steps are skipped
    with a warning, the run stops past `max_nonfinite` with one line and a non-zero exit, and no
    model is written (it used to print `loss 6.26 -> nan` and exit 0 with an all-NaN model)."""
    out = tmp_path / "run"
    proc = rlhf(
        "sft", "--set", "data.path=src/rlhf/assets/demo/demonstrations.jsonl", "optimizer.lr=1e30",
        "optimizer.max_grad_norm=null", "max_steps=6", "max_nonfinite=2", "batch_size=2", "eval.fraction=0",
        "logging.progress=false", "logging.tensorboard=false", f"output_dir={out}",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "[guard] warning: step 2: a NaN or infinite loss or gradient; the step was skipped" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "3 optimizer steps had a NaN or infinite loss, reward or gradient" in errors[0], (
        proc.stderr[-2000:]
    )
    assert not (out / "model").exists()
