"""The scalar (reward/value) model: last-token gathering, training, saving, LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhf.config import ModelConfig, PeftConfig
from rlhf.models import (
    SCALAR_FILE,
    AdapterError,
    ScalarModel,
    adapters_disabled,
    last_token_index,
    load_scalar_model,
    load_tokenizer,
    save_scalar_model,
)
from tolerance import TINY_TERMS, reorder_tol

# Token ids of three tinystories sequences of lengths 5, 3 and 6 (BOS first).
SEQUENCES = [[1, 403, 407, 261, 378], [1, 432, 383], [1, 286, 261, 376, 298, 315]]
PAD = 0  # tinystories pads with <unk>


def _pad(sequences: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids, mask = [], []
    for seq in sequences:
        fill = [PAD] * (width - len(seq))
        ids.append(fill + seq if side == "left" else seq + fill)
        mask.append([0] * len(fill) + [1] * len(seq) if side == "left" else [1] * len(seq) + [0] * len(fill))
    return torch.tensor(ids), torch.tensor(mask)  # (B, T), (B, T)


def test_last_token_index_by_hand() -> None:
    mask = torch.tensor(
        [
            [1, 1, 0, 0],  # right padding: last real token at 1
            [0, 0, 1, 1],  # left padding: 3
            [1, 1, 1, 1],  # no padding: 3
            [0, 1, 1, 0],  # both sides: 2
        ]
    )
    assert last_token_index(mask).tolist() == [1, 3, 3, 2]


@pytest.fixture()
def ts_cfg(tinystories_path: Path) -> ModelConfig:
    return ModelConfig(path=str(tinystories_path), dtype="float32")  # float32 on GPU machines too


def test_left_and_right_padding_give_the_same_values(ts_cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = load_scalar_model(ts_cfg, for_training=False)
    assert isinstance(model, ScalarModel) and model.config.pad_token_id == 0
    with torch.no_grad():
        alone = [model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in SEQUENCES]
        right = model(*_pad(SEQUENCES, "right"))
        left = model(*_pad(SEQUENCES, "left"))
    expected_last = torch.stack([out.last[0] for out in alone])  # (3,)
    # Each unpadded sequence's value is its own last position's value.
    for out, seq in zip(alone, SEQUENCES):
        assert out.last[0] == out.values[0, len(seq) - 1]
    # Values (~1) from batches of another shape and padding: one forward's sums rounded another way.
    tol = reorder_tol(1.0, TINY_TERMS)
    assert torch.allclose(right.last, expected_last, atol=tol)
    assert torch.allclose(left.last, expected_last, atol=tol)
    assert expected_last.std() > 1e-3  # different sequences really give different values
    # Per-token values line up too: right-padded row i, position t == left-padded row i, t + pad.
    for i, seq in enumerate(SEQUENCES):
        shift = right.values.shape[1] - len(seq)
        assert torch.allclose(right.values[i, : len(seq)], left.values[i, shift:], atol=tol)
        assert torch.all(right.values[i, len(seq) :] == 0) and torch.all(left.values[i, :shift] == 0)


def _fit(model: ScalarModel, steps: int, lr: float) -> list[float]:
    input_ids, attention_mask = _pad(SEQUENCES, "right")
    targets = torch.tensor([1.0, -1.0, 0.5])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    errors = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(input_ids, attention_mask).last, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        errors.append(loss.item())
    return errors


@pytest.mark.slow
def test_head_trains_and_fits_targets(ts_cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = load_scalar_model(ts_cfg)
    input_ids, attention_mask = _pad(SEQUENCES, "right")
    model(input_ids, attention_mask).last.sum().backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    model.zero_grad()
    errors = _fit(model, steps=15, lr=1e-2)
    assert errors[-1] < 0.5 * errors[0]


@pytest.mark.slow
def test_save_reloads_with_plain_transformers(ts_cfg: ModelConfig, tmp_path: Path) -> None:
    torch.manual_seed(0)
    tokenizer = load_tokenizer(ts_cfg)
    model = load_scalar_model(ts_cfg, tokenizer=tokenizer)
    _fit(model, steps=3, lr=1e-2)
    model.eval()
    input_ids, attention_mask = _pad(SEQUENCES, "right")
    with torch.no_grad():
        ours = model(input_ids, attention_mask).last  # (3,)

    save_scalar_model(model, tmp_path / "rm", tokenizer, extra={"reward_mean": 0.25, "reward_std": 2.0})
    assert json.loads((tmp_path / "rm" / SCALAR_FILE).read_text()) == {"reward_mean": 0.25, "reward_std": 2.0}
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    assert plain.config.num_labels == 1 and plain.config.pad_token_id == 0
    with torch.no_grad():
        theirs = plain(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]  # (3,)
    # The same weights through transformers' classifier and ScalarModel: one forward rounded another way.
    assert torch.allclose(theirs, ours, atol=1e-5)

    again = load_scalar_model(ModelConfig(path=str(tmp_path / "rm"), dtype="float32"), for_training=False)
    assert again.extra == {"reward_mean": 0.25, "reward_std": 2.0}
    with torch.no_grad():
        assert torch.allclose(again(input_ids, attention_mask).last, ours, atol=1e-6)


@pytest.mark.slow
def test_lora_trains_only_adapters_and_head(ts_cfg: ModelConfig, tmp_path: Path) -> None:
    torch.manual_seed(0)
    peft_cfg = PeftConfig(method="lora", lora_rank=4, lora_alpha=8.0, lora_dropout=0.0)
    model = load_scalar_model(ts_cfg, peft_cfg)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("score" in name for name in trainable) and any("lora_" in name for name in trainable)
    assert all("lora_" in name or "score.modules_to_save" in name for name in trainable)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    errors = _fit(model, steps=15, lr=1e-2)
    assert errors[-1] < 0.5 * errors[0]
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], before) for n, before in frozen_before.items())
    assert all(not torch.equal(after[n], before) for n, before in trained_before.items())

    # The disabled adapter gives the untrained head and backbone: the value model's start point.
    model.eval()
    input_ids, attention_mask = _pad(SEQUENCES, "right")
    with torch.no_grad():
        adapted = model(input_ids, attention_mask).last
        with adapters_disabled(model):
            original = model(input_ids, attention_mask).last
    assert not torch.allclose(adapted, original, atol=1e-3)

    tokenizer = load_tokenizer(ts_cfg)
    save_scalar_model(model, tmp_path / "rm", tokenizer)  # merges LoRA into the weights
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    with torch.no_grad():
        theirs = plain(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]
    assert torch.allclose(theirs, adapted, atol=1e-4)


@pytest.mark.slow
def test_builtin_tiny_scalar_model_and_adapter_save(tmp_path: Path) -> None:
    peft_cfg = PeftConfig(method="lora", lora_rank=2, lora_dropout=0.0)
    model = load_scalar_model(ModelConfig(dtype="float32"), peft_cfg)
    _fit(model, steps=2, lr=1e-2)
    model.eval()
    input_ids, attention_mask = _pad(SEQUENCES, "left")
    with torch.no_grad():
        expected = model(input_ids, attention_mask).last
    save_scalar_model(model, tmp_path / "adapter", load_tokenizer(ModelConfig()), {"step": 2}, merge=False)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    again = load_scalar_model(
        ModelConfig(path=str(tmp_path / "adapter"), dtype="float32"), for_training=False
    )
    assert again.extra == {"step": 2}
    with torch.no_grad():
        assert torch.allclose(again(input_ids, attention_mask).last, expected, atol=1e-6)

    with pytest.raises(AdapterError, match="prompt tuning"):
        load_scalar_model(ModelConfig(), PeftConfig(method="prompt_tuning"))
