"""`rlhf score` and `rlhf eval reward` on a reward model that learned a planted rule, and a
policy and a reward model with different tokenizers working together."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from helpers import planted_comparisons, write_jsonl
from rlhf.cli.main import main
from rlhf.rewards.scorer import RewardScorer
from tolerance import TINY_TERMS, reorder_tol

TRAIN = [
    "data.max_length=64", "prompt.template=raw", "optimizer.lr=3e-3", "optimizer.warmup_ratio=0",
    "max_steps=60", "batch_size=8", "logging.progress=false", "logging.tensorboard=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A reward model trained on 160 planted comparisons; 40 more held out as a file."""
    root = tmp_path_factory.mktemp("planted")
    rows = [{**row, "id": f"q{i}"} for i, row in enumerate(planted_comparisons(200))]
    train = write_jsonl(root / "train.jsonl", rows[:160])
    held = write_jsonl(root / "held.jsonl", rows[160:])
    run = root / "run"
    args = ["reward", "--set", f"data.path={train}", f"eval.path={held}", f"output_dir={run}", *TRAIN]
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    return {
        "root": root,
        "train": train,
        "held": held,
        "rows": rows,
        "model": run / "model",
        "summary": summary,
    }


def test_eval_reward_reproduces_the_training_evaluation(planted, capsys):
    out = planted["root"] / "eval.json"
    assert (
        main(
            [
                "eval",
                "reward",
                "--model",
                str(planted["model"]),
                "--data",
                planted["held"],
                "--output",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    final = planted["summary"]["final_eval"]
    # Same text layout, tokens and model as the training run's own held-out evaluation.
    assert final["accuracy"] > 0.9
    # Scored in batches of another shape than the training run's evaluation: means over the held-out
    # pairs of quantities of ~1, each from one forward's sums rounded another way.
    tol = reorder_tol(1.0, TINY_TERMS)
    for key in ("accuracy", "margin", "loss", "ece", "pairs"):
        assert result[key] == pytest.approx(final[key], abs=tol), key
    assert result["rewards"]["mean"] == pytest.approx(final["rewards"]["mean"], abs=tol)
    assert result["calibration"]["bins"][-1]["count"] == final["calibration"]["bins"][-1]["count"]
    assert "accuracy" in printed and "calibration" in printed and "40" in printed


def test_score_comparisons_writes_every_row_with_its_rewards(planted, capsys):
    out = planted["root"] / "scores.jsonl"
    assert (
        main(["score", "--model", str(planted["model"]), "--data", planted["held"], "--output", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 40
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(160, 200)]  # order and extra fields kept
    assert rows[0]["source"].endswith("held.jsonl:1")
    assert rows[0]["chosen"] == planted["rows"][160]["chosen"]
    right = sum(r["reward_chosen"] > r["reward_rejected"] for r in rows) / len(rows)
    assert right == pytest.approx(planted["summary"]["final_eval"]["accuracy"])
    assert f"agrees with the file on {right:.3f} of 40 pairs" in printed


def test_normalized_training_rewards_have_mean_zero_and_std_one(planted):
    out = planted["root"] / "normalized.jsonl"
    args = [
        "score",
        "--model",
        str(planted["model"]),
        "--data",
        planted["train"],
        "--output",
        str(out),
        "--normalize",
    ]
    assert main(args) == 0
    values = torch.tensor(
        [v for line in out.read_text().splitlines() for v in (json.loads(line)["reward_chosen"], json.loads(line)["reward_rejected"])],
        dtype=torch.float64,
    )  # fmt: skip
    # The statistics saved with the model were computed over exactly these completions.
    assert values.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert values.std(correction=0).item() == pytest.approx(1.0, abs=1e-4)


def test_candidates_get_rewards_and_the_best_index(planted):
    rows = [
        {"prompt": "Say the cat.", "completions": ["the cat", "please the cat", "cat cat"], "rendered_prompt": "X", "k": 1},
        {"prompt": "Say a dog.", "completions": ["please"], "k": 2},
    ]  # fmt: skip
    data = write_jsonl(planted["root"] / "cands.jsonl", rows)
    out = planted["root"] / "cands.scored.jsonl"
    assert main(["score", "--model", str(planted["model"]), "--data", data, "--output", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(r["rewards"]) for r in scored] == [3, 1]
    assert scored[0]["best"] == 1 and scored[1]["best"] == 0
    assert scored[0]["rendered_prompt"] == "X" and scored[1]["k"] == 2
    # The file's rendered_prompt (the policy's layout) is not what the reward model reads: its own is.
    scorer = RewardScorer.load(planted["model"])
    assert scorer.score(["Say the cat."] * 3, rows[0]["completions"]) == pytest.approx(
        scored[0]["rewards"], abs=1e-5
    )


def test_batching_and_order_do_not_change_rewards(planted):
    prompts = [r["prompt"] for r in planted["rows"][:30]]
    texts = [
        r["chosen"] if i % 2 else r["rejected"] + " and more words here" * (i % 3)
        for i, r in enumerate(planted["rows"][:30])
    ]
    one = RewardScorer.load(planted["model"], batch_size=1).score(prompts, texts)
    seven = RewardScorer.load(planted["model"], batch_size=7).score(prompts, texts)
    # Normalized rewards (~1) from batches of another shape: one forward's sums rounded another way.
    tol = reorder_tol(1.0, TINY_TERMS)
    assert seven == pytest.approx(one, abs=tol)
    reverse = RewardScorer.load(planted["model"], batch_size=7).score(prompts[::-1], texts[::-1])
    assert reverse[::-1] == pytest.approx(one, abs=tol)


@pytest.mark.slow
def test_policy_and_reward_model_with_different_tokenizers(planted, tmp_path, tinystories_path):
    """The policy (built-in tiny Llama, its own byte-level BPE and instruction template) writes text;
    a reward model on tinystories' tokenizer scores it after encoding the text its own way."""
    from rlhf.config import load_config
    from rlhf.config.parts import ModelConfig
    from rlhf.data.tokenize import encode_example
    from rlhf.generate import GenerateConfig, run_generate
    from rlhf.models import load_tokenizer

    run = tmp_path / "rm"
    args = ["reward", "--set", f"data.path={planted['train']}", f"output_dir={run}", f"model.path={tinystories_path}",
            *TRAIN, "max_steps=2", "prompt.template=chat", "prompt.system_prompt=Be kind."]  # fmt: skip
    assert main(args) == 0
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say the cat."}, {"prompt": "Say a dog."}])
    cands = tmp_path / "cands.jsonl"
    gen = load_config(GenerateConfig, None, [f"data.path={prompts}", f"output={cands}", "samples_per_prompt=2",
                                             "sampling.max_new_tokens=8", "sampling.seed=0", "progress=false"])  # fmt: skip
    run_generate(gen)
    policy_tok = load_tokenizer(ModelConfig())
    reward_tok = load_tokenizer(ModelConfig(path=str(tinystories_path)))
    sample = "please the happy cat"
    assert policy_tok(sample)["input_ids"] != reward_tok(sample)["input_ids"]  # really different tokenizers

    out = tmp_path / "scored.jsonl"
    assert main(["score", "--model", str(run / "model"), "--data", str(cands), "--output", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    scorer = RewardScorer.load(run / "model")
    for row in scored:
        assert "### Instruction" in row["rendered_prompt"]  # the policy's layout ...
        for text, reward in zip(row["completions"], row["rewards"]):
            # ... while the reward model reads its own chat layout (system prompt included), in its tokens.
            rendered = scorer.renderer.render(row["prompt"])
            assert "Be kind." in rendered and "### Instruction" not in rendered
            ids = encode_example(reward_tok, rendered, text, 64).input_ids
            assert ids[-1] == reward_tok.eos_token_id
            by_hand = scorer.score_ids([ids])[0]
            assert reward == pytest.approx(by_hand, abs=1e-5)


def test_score_errors_are_one_line(planted, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say the cat."}])
    assert main(["score", "--model", str(planted["model"]), "--data", prompts]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prompts.jsonl" in err[0] and "prompt data" in err[0], err
    assert main(["score", "--data", prompts]) == 2
    assert "no reward given: set `reward.model`" in capsys.readouterr().err
    bare = tmp_path / "no-stats"
    shutil.copytree(planted["model"], bare)
    extra = json.loads((bare / "rlhf_scalar.json").read_text())
    del extra["reward_mean"], extra["reward_std"]
    (bare / "rlhf_scalar.json").write_text(json.dumps(extra))
    assert (
        main(
            [
                "score",
                "--model",
                str(bare),
                "--data",
                planted["held"],
                "--output",
                str(tmp_path / "o.jsonl"),
                "--normalize",
            ]
        )
        == 2
    )
    assert "no-stats has none" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_qlora_reward_model_saves_an_adapter_that_scores_the_same(planted, tmp_path):
    """QLoRA cannot merge into its 4-bit base: the adapter is saved, and the scorer loads it on a
    4-bit base again, so it scores exactly as the model did at the end of training."""
    from rlhf.config import load_config
    from rlhf.config.parts import ModelConfig
    from rlhf.data.rows import pad_right
    from rlhf.models.scalar import load_scalar_model
    from rlhf.reward.config import RewardConfig
    from rlhf.reward.train import run_reward

    cfg = load_config(
        RewardConfig, None, [f"data.path={planted['train']}", f"output_dir={tmp_path / 'q'}", *TRAIN,
                             "max_steps=3", "peft.method=qlora", "data.limit=24"],
    )  # fmt: skip
    result = run_reward(cfg)
    model_dir = tmp_path / "q" / "model"
    assert not result.summary["merged"] and (model_dir / "adapter_config.json").is_file()
    assert json.loads((model_dir / "rlhf_scalar.json").read_text())["quantization"] == "4bit"
    scorer = RewardScorer.load(model_dir)
    assert "4bit" in type(next(m for m in scorer.model.modules() if "4bit" in type(m).__name__)).__name__
    rows = planted["rows"][160:170]
    ids = [scorer.encode(r["prompt"], r["chosen"]) for r in rows]
    batch = pad_right(ids, scorer.tokenizer.pad_token_id)
    full = load_scalar_model(ModelConfig(path=str(model_dir)), for_training=False, tokenizer=scorer.tokenizer)
    with torch.no_grad():
        trained = result.model.eval()(*batch).last
        unquantized = full(*batch).last
    reloaded = torch.tensor(scorer.score_ids(ids))
    # On bitsandbytes' CPU backend a few block scales of the reloaded 4-bit weights differ in their
    # last bits (measured: rewards within 7e-4); the same adapter on a full-precision base is off by
    # about 2e-2, which is why the scorer rebuilds the 4-bit base.
    gap = (reloaded - trained).abs().max().item()
    assert gap < 2e-3 and gap * 5 < (unquantized - trained).abs().max().item()
