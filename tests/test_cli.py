"""The `rlhf` command as a user runs it: a real subprocess, its output and exit status."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

RLHF = str(Path(sys.executable).with_name("rlhf"))


def rlhf(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([RLHF, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_help_lists_every_stage():
    proc = rlhf("--help")
    assert proc.returncode == 0
    for stage in (
        "sft",
        "reward",
        "ppo",
        "dpo",
        "rrhf",
        "generate",
        "label",
        "eval",
        "pipeline",
        "demo",
        "data",
        "score",
    ):
        assert f"    {stage}" in proc.stdout, stage


@pytest.mark.slow
def test_print_config_shows_docs_and_overrides():
    proc = rlhf(
        "demo", "--print-config", "--set", "pipeline.sft.peft.method=lora", "pipeline.ppo.max_steps=7"
    )
    assert proc.returncode == 0, proc.stderr
    assert "# LoRA rank r: the width of each adapter's low-rank update." in proc.stdout
    assert "\n      method: lora" in proc.stdout
    assert "\n    max_steps: 7" in proc.stdout


@pytest.mark.slow
def test_config_errors_are_one_line_with_status_2(tmp_path):
    proc = rlhf("demo", "--set", "pipeline.sft.peft.lora_rnak=4")
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: unknown key `pipeline.sft.peft.lora_rnak`; did you mean `pipeline.sft.peft.lora_rank`?\n"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  ppo:\n    optimizer:\n      lr: fast\n")
    proc = rlhf("demo", "--config", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr == f"error: {cfg}:4: `pipeline.ppo.optimizer.lr` expects a number, got str 'fast'\n"


@pytest.mark.slow
def test_dpo_help_shows_its_fields():
    proc = rlhf("dpo", "--print-config")
    assert proc.returncode == 0, proc.stderr
    assert "loss_type: sigmoid" in proc.stdout and "reference_logps: auto" in proc.stdout


@pytest.mark.slow
def test_env_prints_versions():
    info = json.loads(rlhf("env").stdout)
    assert info["packages"]["torch"].startswith("2.")
    assert info["packages"]["rlhf"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pairwise", "alpaca"])
def test_data_formats_lists(fmt):
    proc = rlhf("data", "formats")
    assert proc.returncode == 0
    assert any(line.startswith(fmt + " ") for line in proc.stdout.splitlines())


@pytest.mark.slow
def test_missing_model_and_wrong_data_kind_are_one_line(tmp_path):
    proc = rlhf("sft", "--set", f"output_dir={tmp_path}/a", "model.path=/no/such/model")
    assert proc.returncode == 2
    assert proc.stderr == "error: model directory not found: /no/such/model\n"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    proc = rlhf("sft", "--set", f"output_dir={tmp_path}/b", f"data.path={pairs}")
    assert proc.returncode == 2
    assert proc.stderr == (
        f"error: {pairs}: found comparison data (format `pairwise`), but this stage expects sft data (demonstration)"
        "; the first row has fields: prompt, chosen, rejected; for example format `prompt_completion` is "
        "{prompt, completion} (`rlhf data formats` lists them all)\n"
    )
    scored = tmp_path / "scored.jsonl"  # ratings under another name would train as demonstrations
    scored.write_text('{"prompt": "p", "completion": "c", "score": 2}\n')
    proc = rlhf("sft", "--set", f"output_dir={tmp_path}/c", f"data.path={scored}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(
        f"error: {scored}:1: format `prompt_completion` (demonstration) does not read `score` (1 rows)"
    )


@pytest.mark.slow
def test_data_inspect_reports_skipped_lines(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        '{"prompt": "a", "chosen": "x", "rejected": "y"}\n{"prompt": "b", "chosen": "s", "rejected": "s"}\n'
    )
    proc = rlhf("data", "inspect", str(pairs))
    assert proc.returncode == 0, proc.stderr
    assert "format:   pairwise (detected)" in proc.stdout
    assert "rows:     2 read, 1 skipped" in proc.stdout
    assert f"{pairs}:2: field `rejected`: identical to `chosen`" in proc.stdout
    proc = rlhf("data", "inspect", str(pairs), "--set", "data.on_error=raise")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {pairs}:2: field `rejected`")


def test_every_command_leaves_the_process_group_closed(tmp_path, capsys):
    """An open gloo group at interpreter exit can abort a finished torchrun process (SIGABRT)."""
    import torch.distributed as dist

    from rlhf.cli.main import main

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    assert dist.is_initialized()
    assert main(["data", "formats"]) == 0
    assert not dist.is_initialized()
