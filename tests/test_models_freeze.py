"""Selective fine-tuning: the last N transformer blocks and named parameters train, the rest is frozen.

Checked on the built-in tiny Llama, the real pretrained tinystories-260k, the scalar (reward) model
wrapping a Llama and a GPT-2 layout; the training test checks that only the chosen block moves.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from rlhf.config import ConfigError, FreezeConfig, ModelConfig, PeftConfig
from rlhf.models import apply_peft, build_tiny_model, load_scalar_model
from rlhf.models.freeze import apply_freeze, transformer_blocks

STORIES = [
    "Tom had a red kite. He ran in the park and the kite flew high.",
    "The cat sat on the mat. It was warm and the cat was happy.",
    "Anna found a shell by the sea. She gave it to her mom.",
    "The dog liked to dig. One day he found a big bone.",
]


def _tiny():
    return build_tiny_model()[0]


def _names(model, prefix: str) -> list[str]:
    return sorted(name for name, _ in model.named_parameters() if name.startswith(prefix))


def _frozen_flags_match(model, trainable: list[str]) -> bool:
    return all(param.requires_grad == (name in trainable) for name, param in model.named_parameters())


def test_last_layer_of_tiny_model() -> None:
    model = _tiny()
    assert transformer_blocks(model)[0] == "model.layers"
    trainable = apply_freeze(model, FreezeConfig(train_last_layers=1))
    assert trainable == _names(model, "model.layers.1.")
    assert len(trainable) == 9  # 4 attention + 3 MLP projections + 2 norms
    assert _frozen_flags_match(model, trainable)
    assert not model.lm_head.weight.requires_grad  # tied to the (frozen) embedding


def test_last_layers_of_pretrained_model(tinystories_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tinystories_path)
    trainable = apply_freeze(model, FreezeConfig(train_last_layers=2))
    assert trainable == _names(model, "model.layers.3.") + _names(model, "model.layers.4.")
    assert _frozen_flags_match(model, trainable)
    with pytest.raises(
        ConfigError, match=r"is 6, but the model has only 5 transformer blocks \(model\.layers\)"
    ):
        apply_freeze(
            AutoModelForCausalLM.from_pretrained(tinystories_path), FreezeConfig(train_last_layers=6)
        )


def test_scalar_model_and_gpt2_layout() -> None:
    scalar = load_scalar_model(ModelConfig(dtype="float32"))
    trainable = apply_freeze(scalar, FreezeConfig(train_last_layers=1, train_modules=["score"]))
    assert trainable == sorted(_names(scalar, "seq_model.model.layers.1.") + ["seq_model.score.weight"])

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    assert transformer_blocks(gpt2)[0] == "transformer.h"
    assert apply_freeze(gpt2, FreezeConfig(train_last_layers=1)) == _names(gpt2, "transformer.h.2.")


def test_patterns_alone_and_with_layers() -> None:
    model = _tiny()
    trainable = apply_freeze(model, FreezeConfig(train_modules=["*.mlp.*"]))
    assert trainable == sorted(name for name, _ in model.named_parameters() if ".mlp." in name)
    assert len(trainable) == 2 * 3

    model = _tiny()
    trainable = apply_freeze(model, FreezeConfig(train_last_layers=1, train_modules=["model.norm"]))
    assert trainable == sorted(_names(model, "model.layers.1.") + ["model.norm.weight"])


def test_tied_head_trains_with_the_embedding() -> None:
    model = _tiny()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    # named_parameters lists the tied tensor once, under the embedding's name.
    assert apply_freeze(model, FreezeConfig(train_modules=["lm_head.*"])) == ["model.embed_tokens.weight"]
    assert model.lm_head.weight.requires_grad


def test_no_selection_changes_nothing() -> None:
    model = _tiny()
    model.model.norm.weight.requires_grad_(False)
    trainable = apply_freeze(model, FreezeConfig())
    assert "model.norm.weight" not in trainable
    assert len(trainable) == len(list(model.parameters())) - 1


def test_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="must be at least 1"):
        FreezeConfig(train_last_layers=0)
    with pytest.raises(ConfigError, match="non-empty name patterns"):
        FreezeConfig(train_modules=[])
    with pytest.raises(ConfigError, match=r"only 2 transformer blocks"):
        apply_freeze(_tiny(), FreezeConfig(train_last_layers=3))
    with pytest.raises(ConfigError) as info:
        apply_freeze(_tiny(), FreezeConfig(train_modules=["mlp.gate"]))
    message = str(info.value)
    assert "pattern 'mlp.gate' matches no parameter" in message and "\n" not in message
    assert "model.layers.*.mlp.gate_proj.weight" in message  # hints name kinds of weights

    frozen = _tiny().requires_grad_(False)
    with pytest.raises(ConfigError, match="leaves no trainable parameter"):
        apply_freeze(frozen, FreezeConfig(train_last_layers=1))
    lora = apply_peft(_tiny(), PeftConfig(method="lora", lora_rank=4, target_modules=["q_proj"]))
    with pytest.raises(ConfigError, match="peft.method none"):
        apply_freeze(lora, FreezeConfig(train_last_layers=1))


@pytest.mark.slow
def test_only_the_last_block_learns(tinystories_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tinystories_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tinystories_path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.unk_token
    batch = tokenizer(STORIES, padding=True, return_tensors="pt")  # (4, T) right-padded
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    trainable = apply_freeze(model, FreezeConfig(train_last_layers=1))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0
    )
    model.train()
    losses = []
    for _ in range(6):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    for name, param in model.named_parameters():
        if name in trainable:
            assert not torch.equal(param, before[name]), name
        else:
            assert torch.equal(param, before[name]), name
    assert all(name.startswith("model.layers.4.") for name in trainable)


def test_lora_on_modules_the_model_lacks_is_one_line() -> None:
    """peft's own error is a traceback deep in its code; ours says what to set."""
    from rlhf.models.adapters import AdapterError, apply_peft

    with pytest.raises(AdapterError) as info:
        apply_peft(_tiny(), PeftConfig(method="lora", target_modules=["no_such_proj"]))
    message = str(info.value)
    assert message.startswith("LoRA cannot be put on this llama: Target modules {'no_such_proj'} not found")
    assert message.endswith("set `peft.target_modules` to module names it has, or [all-linear]")
    assert "\n" not in message
