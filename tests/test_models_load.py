"""Loading: the real tinystories-260k model generates exactly its documented text; errors are one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf.config import ModelConfig, PeftConfig
from rlhf.models import (
    ModelLoadError,
    build_tiny_model,
    build_tiny_tokenizer,
    load_lm,
    load_tokenizer,
    resolve_dtype,
    save_model,
)

# Copied from ../shared/models/tinystories-260k/README.md: greedy, 200 new tokens after BOS.
EXPECTED_TEXT = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to play with your ball, but I can't find it.\"\n"
    "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\n"
    "Lily didn't want to help her mom, so she"
)
# fmt: off
EXPECTED_IDS = [
    403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337,
    410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352,
    266, 268, 388, 426, 338, 391, 266, 267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415,
    426, 13, 438, 310, 439, 419, 357, 336, 432, 313, 438, 310, 432, 278, 316, 439, 419, 298, 414, 267,
    265, 282, 295, 433, 426, 436, 317, 286, 296, 418, 269, 279, 292, 416, 439, 413, 409, 416, 327, 263,
    415, 294, 267, 400, 426, 338, 336, 432, 313, 442, 391, 267, 337, 335, 364, 420, 268, 388, 432, 398,
    359, 280, 303, 439, 413, 272, 417, 264, 312, 426, 436, 13, 438, 310, 286, 296, 418, 269, 279, 292,
    416, 439, 413, 409, 416, 327, 263, 415, 294, 267, 400, 426, 338, 336, 432, 313, 442, 439, 423, 262,
    304, 420, 422, 432, 317, 426, 359, 279, 292, 416, 439, 413, 409, 416, 327, 263, 415, 294, 267, 400,
    426, 436, 13, 438, 310, 279, 292, 416, 439, 413, 391, 267, 281, 421, 427, 311, 357, 432, 384, 358,
]
# fmt: on


def test_tinystories_greedy_generation_matches_readme(tinystories_path: Path) -> None:
    model_cfg = ModelConfig(path=str(tinystories_path), dtype="float32")  # also on a bf16 GPU machine
    tokenizer = load_tokenizer(model_cfg, padding_side="left")
    model = load_lm(model_cfg, for_training=False)
    assert tokenizer.pad_token_id == 0 and tokenizer.padding_side == "left"
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    prompt = torch.tensor([[tokenizer.bos_token_id]])  # (1, 1)
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=200, do_sample=False)
    new_ids = out[0, 1:].tolist()
    assert new_ids == EXPECTED_IDS
    assert tokenizer.decode(out[0], skip_special_tokens=True) == EXPECTED_TEXT


def test_resolve_dtype() -> None:
    expected_auto = (
        torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    )
    assert resolve_dtype("auto") == expected_auto
    assert resolve_dtype("float16") == torch.float16
    assert resolve_dtype("bfloat16") == torch.bfloat16
    assert resolve_dtype(torch.float64) == torch.float64
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float8")


def test_missing_local_directory_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    for load in (load_lm, load_tokenizer):
        with pytest.raises(ModelLoadError) as info:
            load(ModelConfig(path=str(missing)))
        message = str(info.value)
        assert str(missing) in message and "\n" not in message


def test_unloadable_directory_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError) as info:
        load_lm(ModelConfig(path=str(broken)))
    assert str(broken) in str(info.value) and "\n" not in str(info.value)
    assert info.value.__cause__ is not None  # the transformers error is kept for debugging


def test_tokenizer_without_pad_gets_unk_then_eos(tinystories_path: Path, tmp_path: Path) -> None:
    no_pad = tmp_path / "no-pad"
    shutil.copytree(tinystories_path, no_pad)
    config_file = no_pad / "tokenizer_config.json"
    settings = json.loads(config_file.read_text())
    del settings["pad_token"]
    config_file.write_text(json.dumps(settings))
    tokenizer = load_tokenizer(ModelConfig(path=str(no_pad)))
    assert tokenizer.pad_token == "<unk>" and tokenizer.pad_token_id == 0
    assert tokenizer.padding_side == "right"

    del settings["unk_token"]
    config_file.write_text(json.dumps(settings))
    tokenizer = load_tokenizer(ModelConfig(path=str(no_pad)))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 2


def test_separate_tokenizer_path_and_builtin(tinystories_path: Path) -> None:
    tokenizer = load_tokenizer(ModelConfig(tokenizer=str(tinystories_path)))
    assert len(tokenizer) == 512 and tokenizer.unk_token_id == 0
    tiny = load_tokenizer(ModelConfig(), padding_side="left")
    assert tiny.get_vocab() == build_tiny_tokenizer().get_vocab() and tiny.padding_side == "left"


def test_quantized_base_cannot_be_trained_in_full() -> None:
    with pytest.raises(ModelLoadError, match="freezes the base weights"):
        load_lm(ModelConfig(quantization="4bit"))
    with pytest.raises(ModelLoadError, match="qlora"):
        load_lm(ModelConfig(quantization="8bit"), PeftConfig(method="qlora"))


def test_gradient_checkpointing_with_lora_trains(tinystories_path: Path) -> None:
    model_cfg = ModelConfig(path=str(tinystories_path), dtype="float32", gradient_checkpointing=True)
    model = load_lm(model_cfg, PeftConfig(method="lora", lora_rank=2))
    assert model.get_base_model().is_gradient_checkpointing
    assert model.config.use_cache is False
    input_ids = torch.tensor([[1, 403, 407, 261, 378, 432]])  # (1, 6)
    model.train()
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    grads = [p.grad for name, p in model.named_parameters() if "lora_B" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_builtin_tiny_loads_with_dtype_and_pad_from_tokenizer() -> None:
    tokenizer = load_tokenizer(ModelConfig())
    model = load_lm(ModelConfig(dtype="bfloat16"), for_training=False, tokenizer=tokenizer)
    assert model.dtype == torch.bfloat16
    assert model.name_or_path == "builtin:tiny"
    assert model.config.pad_token_id == tokenizer.pad_token_id == 0
    logits = model(torch.tensor([[1, 300, 301]])).logits  # (1, 3, V)
    assert logits.shape == (1, 3, len(tokenizer)) and torch.isfinite(logits).all()


def test_saved_adapter_directory_loads_as_base_plus_adapter(tinystories_path: Path, tmp_path: Path) -> None:
    model_cfg = ModelConfig(path=str(tinystories_path), dtype="float32")
    model = load_lm(model_cfg, PeftConfig(method="lora", lora_rank=2, lora_dropout=0.0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)  # make the adapter do something
    model.eval()
    input_ids = torch.tensor([[1, 403, 407, 261, 378, 432]])  # (1, 6)
    with torch.no_grad():
        adapted = model(input_ids).logits
    tokenizer = load_tokenizer(model_cfg)
    save_model(model, tokenizer, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()

    reloaded = load_lm(ModelConfig(path=str(tmp_path / "adapter"), dtype="float32"), for_training=False)
    with torch.no_grad():
        # The saved adapter reloaded: the same weights and operations as before saving.
        assert torch.allclose(reloaded(input_ids).logits, adapted, atol=1e-6)
    base = AutoModelForCausalLM.from_pretrained(tinystories_path)
    with torch.no_grad():
        assert not torch.allclose(base(input_ids).logits, adapted, atol=1e-3)
    assert load_tokenizer(ModelConfig(path=str(tmp_path / "adapter"))).get_vocab() == tokenizer.get_vocab()


def test_builtin_tiny_load_is_the_seed_0_tiny_model() -> None:
    expected, _ = build_tiny_model(seed=0)
    model = load_lm(ModelConfig(dtype="float32"), for_training=False)
    input_ids = torch.tensor([[1, 300, 301, 302]])  # (1, 4)
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, expected(input_ids).logits)
