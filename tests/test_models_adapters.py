"""Adapters on the real tinystories-260k model: LoRA, QLoRA, prompt tuning, the disabled-adapter
reference and merging. Each training test checks that the loss falls, the adapter changed and
every base weight is bit-identical to before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf.config import ModelConfig, PeftConfig
from rlhf.models import (
    AdapterError,
    adapters_disabled,
    load_lm,
    load_tokenizer,
    merge_adapters,
    reference_forward,
    save_model,
    trainable_parameter_summary,
)

STORIES = [
    "Tom had a red kite. He ran in the park and the kite flew high.",
    "The cat sat on the mat. It was warm and the cat was happy.",
    "Anna found a shell by the sea. She gave it to her mom.",
    "The dog liked to dig. One day he found a big bone.",
]


def _batch(tokenizer) -> dict[str, torch.Tensor]:
    batch = tokenizer(STORIES, padding=True, return_tensors="pt")  # (4, T) right-padded
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}


def _train(model, batch, steps: int, lr: float) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batch = {key: value.to(model.device) for key, value in batch.items()}  # a 4-bit base sits on the GPU
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def _snapshot(model, keep) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if keep(name)}


def _is_lora(name: str) -> bool:
    return "lora_" in name


@pytest.fixture()
def ts_cfg(tinystories_path: Path) -> ModelConfig:
    return ModelConfig(path=str(tinystories_path), dtype="float32")  # float32 on GPU machines too


def _lora(ts_cfg: ModelConfig, **overrides):
    settings = dict(method="lora", lora_rank=4, lora_alpha=8.0, lora_dropout=0.0)
    settings.update(overrides)
    return load_lm(ts_cfg, PeftConfig(**settings))


@pytest.mark.slow
def test_lora_trains_only_adapters(ts_cfg: ModelConfig) -> None:
    model = _lora(ts_cfg)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(_is_lora(name) for name in trainable)
    # peft's Llama default: q_proj and v_proj in each of the 5 layers, A and B each.
    assert len(trainable) == 5 * 2 * 2
    n_trainable, n_total = trainable_parameter_summary(model)
    # q_proj: A (4x64) + B (64x4); v_proj: A (4x64) + B (32x4) -> 1024 per layer.
    assert n_trainable == 5 * (4 * 64 + 64 * 4 + 4 * 64 + 32 * 4)
    assert n_total == 260_032 + n_trainable

    base_before = _snapshot(model, lambda name: not _is_lora(name))
    lora_before = _snapshot(model, _is_lora)
    losses = _train(model, _batch(load_tokenizer(ts_cfg)), steps=6, lr=1e-2)
    assert losses[-1] < losses[0] - 0.05
    after = dict(model.named_parameters())
    for name, before in base_before.items():
        assert torch.equal(after[name], before), name
    for name, before in lora_before.items():
        assert not torch.equal(after[name], before), name


def test_lora_all_linear_targets_every_projection(ts_cfg: ModelConfig) -> None:
    model = _lora(ts_cfg, target_modules=["all-linear"])
    adapted = {name.split(".")[-2] for name, _ in model.named_modules() if name.endswith("lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.mark.slow
def test_qlora_trains_adapters_on_frozen_4bit_base(ts_cfg: ModelConfig) -> None:
    import bitsandbytes as bnb

    model = load_lm(ts_cfg, PeftConfig(method="qlora", lora_rank=4, lora_dropout=0.0))
    base = model.get_base_model()
    assert base.is_loaded_in_4bit
    q_proj = base.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    assert q_proj.base_layer.weight.quant_state.quant_type == "nf4"
    quantized = {
        name: (module.weight.detach().clone(), module.weight.quant_state.absmax.detach().clone())
        for name, module in base.named_modules()
        if isinstance(module, bnb.nn.Linear4bit)
    }
    assert len(quantized) == 5 * 7  # every linear layer of the 5 blocks; the tied head stays full
    lora_before = _snapshot(model, _is_lora)

    losses = _train(model, _batch(load_tokenizer(ts_cfg)), steps=6, lr=1e-2)
    assert losses[-1] < losses[0] - 0.05
    modules = dict(base.named_modules())
    for name, (storage, absmax) in quantized.items():
        assert torch.equal(modules[name].weight, storage), name
        assert torch.equal(modules[name].weight.quant_state.absmax, absmax), name
    after = dict(model.named_parameters())
    assert all(not torch.equal(after[name], before) for name, before in lora_before.items())
    assert all(_is_lora(name) for name, p in model.named_parameters() if p.requires_grad)
    with pytest.raises(AdapterError, match="quantized base"):
        merge_adapters(model)


@pytest.mark.slow
def test_prompt_tuning_trains_only_the_prompt(ts_cfg: ModelConfig) -> None:
    model = load_lm(ts_cfg, PeftConfig(method="prompt_tuning", num_virtual_tokens=6))
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert list(trainable) == ["prompt_encoder.default.embedding.weight"]
    assert trainable_parameter_summary(model)[0] == 6 * 64
    base_before = _snapshot(model, lambda name: not name.startswith("prompt_encoder"))
    prompt_before = trainable["prompt_encoder.default.embedding.weight"].detach().clone()

    losses = _train(model, _batch(load_tokenizer(ts_cfg)), steps=8, lr=1e-1)
    assert losses[-1] < losses[0] - 0.05
    after = dict(model.named_parameters())
    for name, before in base_before.items():
        assert torch.equal(after[name], before), name
    assert not torch.equal(after["prompt_encoder.default.embedding.weight"], prompt_before)
    with pytest.raises(AdapterError, match="prompt tuning cannot be merged"):
        merge_adapters(model)


def test_prompt_tuning_init_from_text(ts_cfg: ModelConfig) -> None:
    tokenizer = load_tokenizer(ts_cfg)
    text = "Once upon a time"
    peft_cfg = PeftConfig(method="prompt_tuning", num_virtual_tokens=7, prompt_tuning_init_text=text)
    model = load_lm(ts_cfg, peft_cfg, tokenizer=tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 4  # "Once upon a time" is 4 tokens, so 7 virtual tokens repeat it: 4 + 3
    expected_ids = (ids + ids)[:7]
    embeddings = model.get_input_embeddings().weight[expected_ids]  # (7, 64)
    assert torch.equal(model.prompt_encoder["default"].embedding.weight, embeddings)


@pytest.mark.slow
def test_disabled_adapter_is_the_base_model(ts_cfg: ModelConfig, tinystories_path: Path) -> None:
    tokenizer = load_tokenizer(ts_cfg)
    batch = _batch(tokenizer)
    model = _lora(ts_cfg)
    _train(model, batch, steps=4, lr=1e-2)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    base = AutoModelForCausalLM.from_pretrained(tinystories_path).eval()
    with torch.no_grad():
        adapted = model(**inputs).logits  # (4, T, V)
        expected = base(**inputs).logits
        with adapters_disabled(model):
            reference = model(**inputs).logits
    assert not torch.allclose(adapted, expected, atol=1e-3)  # training moved the adapter
    # The adapter switched off runs the base layers alone: the base's own operations, in its order.
    assert torch.allclose(reference, expected, atol=1e-6)
    assert torch.allclose(reference_forward(model, **inputs).logits, expected, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, adapted)  # the adapter is back on afterwards

    with pytest.raises(AdapterError, match="separate frozen copy"), adapters_disabled(base):
        pass


def test_disabled_prompt_is_the_base_model(ts_cfg: ModelConfig, tinystories_path: Path) -> None:
    model = load_lm(ts_cfg, PeftConfig(method="prompt_tuning", num_virtual_tokens=4))
    input_ids = _batch(load_tokenizer(ts_cfg))["input_ids"][:1]  # (1, T)
    base = AutoModelForCausalLM.from_pretrained(tinystories_path).eval()
    with torch.no_grad():
        assert model(input_ids=input_ids).logits.shape[1] == input_ids.shape[1] + 4
        reference = reference_forward(model, input_ids=input_ids).logits
        assert torch.allclose(reference, base(input_ids=input_ids).logits, atol=1e-6)


@pytest.mark.slow
def test_merged_model_reloads_with_plain_transformers(ts_cfg: ModelConfig, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(ts_cfg)
    batch = _batch(tokenizer)
    model = _lora(ts_cfg)
    _train(model, batch, steps=4, lr=1e-2)
    with torch.no_grad():
        adapted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    merged = save_model(model, tokenizer, tmp_path / "merged", merge=True)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    files = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert "adapter_config.json" not in files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        logits = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(logits, adapted, atol=1e-4)  # merging rounds W + BA once


def test_save_replaces_an_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    model = load_lm(ModelConfig(dtype="float32"), for_training=False)
    save_model(model, None, target)
    assert not (target / "stale.txt").exists() and (target / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
def test_saved_qlora_adapter_trains_on(ts_cfg: ModelConfig, tmp_path: Path) -> None:
    import bitsandbytes as bnb

    tokenizer = load_tokenizer(ts_cfg)
    model = load_lm(ts_cfg, PeftConfig(method="qlora", lora_rank=4, lora_dropout=0.0))
    first = _train(model, _batch(tokenizer), steps=4, lr=1e-2)
    save_model(model, tokenizer, tmp_path / "qlora")
    with pytest.raises(AdapterError, match="quantized base"):
        save_model(model, tokenizer, tmp_path / "merged", merge=True)

    resumed_cfg = ModelConfig(path=str(tmp_path / "qlora"), dtype="float32", quantization="4bit")
    resumed = load_lm(resumed_cfg)
    q_proj = resumed.get_base_model().model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    trainable = [name for name, p in resumed.named_parameters() if p.requires_grad]
    assert trainable and all(_is_lora(name) for name in trainable)
    again = _train(resumed, _batch(tokenizer), steps=2, lr=1e-2)
    assert again[0] < first[0] - 0.05  # it starts where the first run left off, not from scratch
