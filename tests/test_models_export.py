"""`rlhf export`: a saved LoRA adapter becomes one model plain transformers loads, with the same
logits; what cannot be exported (prompt tuning, reward models, missing paths) is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.config import ModelConfig, PeftConfig
from rlhf.models import (
    ModelLoadError,
    apply_peft,
    build_tiny_model,
    load_lm,
    load_scalar_model,
    save_model,
    save_scalar_model,
)
from rlhf.models.export import export_model

RLHF = str(Path(sys.executable).with_name("rlhf"))
TEXTS = ["Once upon a time there was a little girl.", "What is the capital of France?"]


def rlhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RLHF, *args], capture_output=True, text=True, timeout=300)


def _logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")  # (2, T)
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.fixture()
def lora_dir(tmp_path: Path):
    """An adapter-only directory on `builtin:tiny` whose LoRA update is not zero; its logits."""
    model, tokenizer = build_tiny_model()
    peft_model = apply_peft(
        model, PeftConfig(method="lora", lora_rank=4, target_modules=["q_proj", "v_proj"])
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero, which would make the adapter a no-op
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    peft_model.eval()
    expected = _logits(peft_model, tokenizer)
    assert not torch.allclose(expected, _logits(build_tiny_model()[0].eval(), tokenizer), atol=1e-3)
    directory = tmp_path / "adapter"
    save_model(peft_model, tokenizer, directory)
    assert (directory / "adapter_config.json").is_file()
    return directory, expected


@pytest.mark.slow
def test_cli_merges_lora_for_plain_transformers(lora_dir, tmp_path: Path) -> None:
    directory, expected = lora_dir
    out = tmp_path / "merged"
    proc = rlhf("export", str(directory), str(out), "--merge")
    assert proc.returncode == 0, proc.stderr
    assert "lora adapter merged into builtin:tiny, float32" in proc.stdout
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer_config.json"} <= files
    assert "adapter_config.json" not in files and "adapter_model.safetensors" not in files

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in name for name in model.state_dict())
    logits = _logits(model, AutoTokenizer.from_pretrained(out))
    assert torch.allclose(logits, expected, atol=1e-5)  # merging rounds W + BA once per weight


def test_dtype_and_resave(lora_dir, tmp_path: Path) -> None:
    directory, expected = lora_dir
    info = export_model(str(directory), str(tmp_path / "bf16"), dtype="bfloat16")
    assert info["merged"] and info["adapter"] == "lora" and info["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16

    # A full model re-saves: no adapter, and its own dtype is kept unless another is asked for.
    info = export_model(str(tmp_path / "bf16"), str(tmp_path / "again"))
    assert not info["merged"] and info["adapter"] is None and info["dtype"] == "bfloat16"
    info = export_model(str(tmp_path / "bf16"), str(tmp_path / "f32"), dtype="float32")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "f32").eval()
    assert reloaded.dtype == torch.float32
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "f32")
    assert torch.allclose(_logits(reloaded, tokenizer), expected, atol=0.1)  # bfloat16 rounding


def test_no_merge_keeps_the_adapter(lora_dir, tmp_path: Path) -> None:
    directory, expected = lora_dir
    info = export_model(str(directory), str(tmp_path / "copy"), merge=False)
    assert not info["merged"] and info["base"] == "builtin:tiny"
    assert (tmp_path / "copy" / "adapter_config.json").is_file()
    model = load_lm(ModelConfig(path=str(tmp_path / "copy"), dtype="float32"), for_training=False)
    assert torch.allclose(_logits(model, build_tiny_model()[1]), expected, atol=1e-6)


@pytest.mark.slow
def test_prompt_tuning_cannot_be_merged(tmp_path: Path) -> None:
    model, tokenizer = build_tiny_model()
    save_model(
        apply_peft(model, PeftConfig(method="prompt_tuning", num_virtual_tokens=4)),
        tokenizer,
        tmp_path / "pt",
    )
    proc = rlhf("export", str(tmp_path / "pt"), str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "prompt_tuning adapter" in proc.stderr and "cannot be merged" in proc.stderr
    assert "use the adapter directory itself as model.path" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_missing_source_is_one_line(tmp_path: Path) -> None:
    proc = rlhf("export", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr == f"error: model directory not found: {tmp_path / 'nope'}\n"


def test_refuses_reward_models_and_itself(lora_dir, tmp_path: Path) -> None:
    scalar = load_scalar_model(ModelConfig(dtype="float32"))
    save_scalar_model(scalar, tmp_path / "reward", build_tiny_model()[1])
    with pytest.raises(ModelLoadError, match="reward/value model"):
        export_model(str(tmp_path / "reward"), str(tmp_path / "out"))
    directory, _ = lora_dir
    with pytest.raises(ModelLoadError, match="is the source itself"):
        export_model(str(directory), str(directory))
    assert (directory / "adapter_config.json").is_file()


def test_qlora_adapter_merges_onto_the_full_precision_base(tinystories_path: Path, tmp_path: Path) -> None:
    ts_cfg = ModelConfig(path=str(tinystories_path), dtype="float32")
    qlora = load_lm(ts_cfg, PeftConfig(method="qlora", lora_rank=4, lora_dropout=0.0))
    with torch.no_grad():
        for name, param in qlora.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    tokenizer = AutoTokenizer.from_pretrained(tinystories_path)
    save_model(qlora, tokenizer, tmp_path / "qlora")

    info = export_model(str(tmp_path / "qlora"), str(tmp_path / "merged"))
    assert info["merged"] and info["base"] == str(tinystories_path)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not getattr(merged, "is_loaded_in_4bit", False)
    # Exactly the full-precision base plus the adapter ...
    unquantized = load_lm(ModelConfig(path=str(tmp_path / "qlora"), dtype="float32"), for_training=False)
    expected = _logits(unquantized, tokenizer)
    assert torch.allclose(_logits(merged, tokenizer), expected, atol=1e-4)  # merging rounds W + BA once
    # ... which is not the base alone (the adapter did something).
    base = AutoModelForCausalLM.from_pretrained(tinystories_path).eval()
    assert not torch.allclose(_logits(base, tokenizer), expected, atol=1e-2)
