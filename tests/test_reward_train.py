"""Small real reward-model runs: they must learn a planted rule, run on real rankings, and save a
model plain transformers loads with the same scores."""

from __future__ import annotations

import json
import random

import pytest
import torch

from helpers import WORDS, planted_comparisons, write_jsonl
from rlhf.config import load_config
from rlhf.reward.config import RewardConfig
from rlhf.reward.train import run_reward
from tolerance import TINY_TERMS, reorder_tol


def config(tmp_path, data_path: str, *overrides: str) -> RewardConfig:
    base = [
        f"data.path={data_path}",
        "data.max_length=64",
        "prompt.template=raw",
        "optimizer.lr=3e-3",
        "optimizer.warmup_steps=0",
        "optimizer.warmup_ratio=0",
        "batch_size=8",
        f"output_dir={tmp_path / 'run'}",
        "logging.progress=false",
        "logging.tensorboard=false",
    ]
    return load_config(RewardConfig, None, base + list(overrides))


@pytest.mark.slow
def test_learns_planted_preference(tmp_path):
    data = write_jsonl(tmp_path / "prefs.jsonl", planted_comparisons())
    cfg = config(tmp_path, data, "eval.fraction=0.2", "eval.every=50", "max_steps=120", "centering=0.01")
    summary = run_reward(cfg).summary
    assert summary["data"]["pairs"] == 160 and summary["data"]["eval_pairs"] == 40
    final = summary["final_eval"]
    assert final["accuracy"] > 0.9, [e["accuracy"] for e in summary["eval"]]
    assert summary["eval"][0]["step"] == 0 and final["step"] == 120
    assert final["ece"] is not None and len(final["calibration"]["bins"]) == 10
    assert final["rewards"]["count"] == 80
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["final_eval"]["accuracy"] == final["accuracy"]


@pytest.mark.slow
def test_oasst_rankings_and_saved_model_reloads(tmp_path, shared_dir, tinystories_path):
    from transformers import AutoModelForSequenceClassification

    from rlhf.data import load_records

    path = shared_dir / "data" / "oasst_en_100_tree.jsonl"
    cfg = config(
        tmp_path, str(path), f"model.path={tinystories_path}", "data.max_length=64", "eval.fraction=0.2", "eval.batch_size=32",
        "max_steps=4", "batch_size=4", "optimizer.lr=1e-4", "prompt.template=auto",
    )  # fmt: skip
    rankings = load_records(cfg.data, expect="reward").records
    assert len(rankings) == 212 and sum(len(r.completions) for r in rankings) == 641
    expected_pairs = sum(len(r.pairs()) for r in rankings)
    result = run_reward(cfg)
    summary = result.summary
    assert summary["data"]["pairs"] + summary["data"]["eval_pairs"] == expected_pairs
    assert summary["data"]["completions"] + summary["data"]["eval_completions"] == 641
    assert 0.0 <= summary["final_eval"]["accuracy"] <= 1.0
    assert summary["final_eval"]["accuracy_by_position"][0]["position"] == 0

    # (c) plain transformers loads the saved model and scores like the trained ScalarModel.
    model_dir = tmp_path / "run" / "model"
    plain = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = result.tokenizer
    texts = ["Once upon a time there was a cat.", "Hi", "The dog ran to the park and played all day long."]
    batch = tok(texts, return_tensors="pt", padding=True)
    assert tok.padding_side == "right" and tok.pad_token_id not in batch["input_ids"][1, :2].tolist()
    scalar = result.model.eval()
    with torch.no_grad():
        ours = scalar(batch["input_ids"], batch["attention_mask"]).last
        theirs = plain(**batch).logits.squeeze(-1)
    # The same weights through transformers' classifier and ScalarModel: one forward's sums rounded
    # another way, on rewards of up to ~2.
    assert torch.allclose(ours, theirs, atol=reorder_tol(2.0, TINY_TERMS)), (ours, theirs)

    extra = json.loads((model_dir / "rlhf_scalar.json").read_text())
    assert extra["reward_mean"] == pytest.approx(summary["reward_mean"])
    assert extra["num_completions"] == summary["data"]["completions"]
    from rlhf.reward.train import build_data, score_groups
    from rlhf.training import make_accelerator

    data = build_data(cfg, tok)
    scores = score_groups(make_accelerator(cfg.optimizer), scalar, data.train, 8, tok.pad_token_id)
    flat = torch.tensor([r for group in scores for r in group], dtype=torch.float64)
    assert extra["reward_mean"] == pytest.approx(flat.mean().item(), abs=1e-5)
    assert extra["reward_std"] == pytest.approx(flat.std(correction=0).item(), abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["regression", "label"])
def test_pointwise_modes_loss_falls(tmp_path, kind):
    rng = random.Random(1)
    rows = []
    for _ in range(64):
        good = rng.random() < 0.5
        text = " ".join(rng.choice(WORDS) for _ in range(3)) + (" please" if good else "")
        row = {"prompt": "Say something.", "completion": text}
        row.update(
            {"rating": 5 if good else 1} if kind == "regression" else {"label": "good" if good else "bad"}
        )
        rows.append(row)
    data = write_jsonl(tmp_path / "points.jsonl", rows)
    extra = ["data.rating_scale=[1,5]"] if kind == "regression" else []
    summary = run_reward(config(tmp_path, data, "max_steps=30", *extra)).summary
    assert summary["loss_type"] == kind
    losses = summary["train_loss"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 * 0.7, losses


@pytest.mark.slow
def test_lora_is_merged_into_a_plain_classifier(tmp_path):
    from transformers import AutoModelForSequenceClassification

    data = write_jsonl(tmp_path / "prefs.jsonl", planted_comparisons(16))
    result = run_reward(config(tmp_path, data, "peft.method=lora", "max_steps=3"))
    model_dir = tmp_path / "run" / "model"
    assert result.summary["merged"] and not (model_dir / "adapter_config.json").exists()
    plain = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = result.tokenizer(["Say the cat. please", "no"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ours = result.model.eval()(batch["input_ids"], batch["attention_mask"]).last
        theirs = plain(**batch).logits.squeeze(-1)
    # The same weights through transformers' classifier and ScalarModel: one forward's sums rounded
    # another way, on rewards of up to ~2.
    assert torch.allclose(ours, theirs, atol=reorder_tol(2.0, TINY_TERMS)), (ours, theirs)


@pytest.mark.slow
def test_packed_training_follows_the_padded_run(tmp_path):
    """Packing changes only where the tokens sit: the losses and the trained rewards stay the same."""
    rows = [
        {"prompt": f"Say {w}.", "completions": [f"{w} please", w, f"{w} {w} no"], "ranks": [1, 2, 3]}
        for w in WORDS
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "ranks.jsonl", rows)
    runs = {}
    for packing in (True, False):
        out = tmp_path / f"packing-{packing}"
        cfg = config(tmp_path, data, "max_steps=6", "batch_size=4", f"packing={str(packing).lower()}",
                     f"output_dir={out}", "logging.log_every=1")  # fmt: skip
        runs[packing] = run_reward(cfg).summary
    assert runs[True]["packed"] and not runs[False]["packed"]
    # Pair losses (~log 2) over a step's 4 rankings of 3 pairs, and rewards (head sums over the 64
    # hidden units, behind TINY_TERMS additions) from packed rows rounded another way, after 6 updates.
    assert runs[True]["train_loss"] == pytest.approx(
        runs[False]["train_loss"], abs=reorder_tol(0.7, 12, updates=6)
    )
    assert runs[True]["reward_mean"] == pytest.approx(
        runs[False]["reward_mean"], abs=reorder_tol(1.0, TINY_TERMS, updates=6)
    )
