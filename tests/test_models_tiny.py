"""The built-in tiny model: its own byte-level tokenizer, chat template, and a standard HF save."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.models import build_tiny_model, build_tiny_tokenizer, save_tiny

ROUND_TRIP_TEXTS = [
    "Once upon a time, there was a little girl.",
    "Grüße aus Köln! 日本語のテキスト, emoji 🙂🚀 and ½ ≠ π",
    "def add(a, b):\n    return a + b  # tab\there\r\n",
    "  leading and trailing spaces   ",
    "\n\n\nonly newlines\n",
    "",
    "\x00\x01 control bytes \x7f",
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_tokenizer_round_trips_any_text(text: str) -> None:
    tokenizer = build_tiny_tokenizer()
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id  # BOS added, no EOS
    assert tokenizer.eos_token_id not in ids and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_special_tokens_and_merges() -> None:
    tokenizer = build_tiny_tokenizer()
    assert len(tokenizer) == 512
    assert (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    ) == (
        0,
        1,
        2,
        3,
    )
    assert tokenizer.padding_side == "right"
    # Common words learned from the built-in text are single tokens (plus BOS).
    for word in [" the", " and", " answer", " model", " was", "def"]:
        assert len(tokenizer(word)["input_ids"]) == 2, word
    # Role markers are special tokens: one id each, never split.
    for role in ["<|system|>", "<|user|>", "<|assistant|>"]:
        assert tokenizer.convert_tokens_to_ids(role) in (4, 5, 6)
        assert len(tokenizer(role, add_special_tokens=False)["input_ids"]) == 1


def test_tokenizer_vocabulary_is_pinned() -> None:
    # The merges are learned at build time with an explicit tie-break, so the ids must be the
    # same in every process (any hash seed) and every release: saved tiny models depend on them.
    ids = build_tiny_tokenizer()("Once upon a time, the model said hello")["input_ids"]
    assert ids == [1, 430, 334, 360, 119, 293, 263, 264, 383, 108, 51, 266, 363, 420, 455, 39, 381, 115, 118]


def test_chat_template_renders_and_masks_assistant() -> None:
    tokenizer = build_tiny_tokenizer()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == "<s><|system|>\nBe brief.</s><|user|>\nHi</s><|assistant|>\nHello!</s>"
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s><|system|>\nBe brief.</s><|user|>\nHi</s><|assistant|>\n"

    encoded = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    assistant_ids = [i for i, m in zip(ids, mask) if m]
    assert tokenizer.decode(assistant_ids) == "Hello!</s>"
    with pytest.raises(Exception, match="unknown chat role"):
        tokenizer.apply_chat_template([{"role": "robot", "content": "x"}], tokenize=False)


def test_tiny_model_is_seeded_and_runs() -> None:
    rng_before = torch.random.get_rng_state()
    model, tokenizer = build_tiny_model(seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's RNG is untouched
    same, _ = build_tiny_model(seed=0)
    other, _ = build_tiny_model(seed=1)
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(model.state_dict()[weight], same.state_dict()[weight])
    assert not torch.equal(model.state_dict()[weight], other.state_dict()[weight])
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64

    batch = tokenizer(["hello world", "a"], padding=True, return_tensors="pt")
    logits = model(**batch).logits  # (2, T, V)
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    deeper, _ = build_tiny_model(num_hidden_layers=3)
    assert len(deeper.model.layers) == 3


def test_save_tiny_reloads_with_plain_transformers(tmp_path: Path) -> None:
    directory = save_tiny(tmp_path / "tiny")
    model, tokenizer = build_tiny_model()
    reloaded = AutoModelForCausalLM.from_pretrained(directory)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(directory)
    text = "The answer is 42.\nDone 🙂"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]  # (1, T)
    assert torch.equal(reloaded_tokenizer(text, return_tensors="pt")["input_ids"], ids)
    assert (
        reloaded_tokenizer.pad_token_id == 0 and reloaded_tokenizer.chat_template == tokenizer.chat_template
    )
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert reloaded.generation_config.eos_token_id == 2 and reloaded.generation_config.pad_token_id == 0
