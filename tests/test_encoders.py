"""Encoder-only models (BERT, RoBERTa, DeBERTa-v2) as reward models and as ready-made rewards, and the
kinds that cannot be policies refused in one line. Tiny random classifiers of each architecture are
built here with the project's own tokenizer, each with two labels (`nothate`, `hate`) as the
hate-speech classifiers used as rewards in the wild."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rlhf.config import ModelConfig, load_config
from rlhf.models import load_scalar_model
from rlhf.models.load import ModelLoadError, kind_of, load_lm
from rlhf.rewards import build_reward_function
from rlhf.rewards.config import RewardSourcesConfig
from rlhf.rewards.sources import ClassifierSource, RewardSourceError
from tiny_models import ENCODERS, build_classifier


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return {name: build_classifier(root / name, t, size) for name, (t, size) in ENCODERS.items()}


def test_the_kind_comes_from_the_config(encoders, tmp_path):
    from transformers import AutoConfig

    assert {name: kind_of(str(path)) for name, path in encoders.items()} == dict.fromkeys(encoders, "encoder")
    assert kind_of("builtin:tiny") == "causal"
    AutoConfig.for_model("t5", d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=32).save_pretrained(
        tmp_path / "t5"
    )
    AutoConfig.for_model("bart", d_model=16, encoder_layers=1, decoder_layers=1).save_pretrained(
        tmp_path / "bart"
    )
    assert kind_of(str(tmp_path / "t5")) == kind_of(str(tmp_path / "bart")) == "seq2seq"


def test_an_encoder_is_never_loaded_as_a_policy(encoders):
    with pytest.raises(ModelLoadError, match="is an encoder-only model: it cannot write text"):
        load_lm(ModelConfig(path=str(encoders["bert"])))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_an_encoder_reward_model_reads_its_own_classifier_at_the_first_token(encoders, name):
    """The reward is what the architecture's own classifier gives for the sequence (its pooled first
    token); rebuilt by hand for BERT (pooler tanh(W h_0 + b), then the one-label classifier). The
    2-label head is replaced by a one-label one, and the run says so."""
    model = load_scalar_model(ModelConfig(path=str(encoders[name]), dtype="float32"), for_training=False)
    assert model.encoder and model.config.num_labels == 1
    assert "2 labels (nothate, hate): its head is replaced by a new one-label head" in model.note
    ids = torch.tensor([[1, 40, 41, 42, 2, 0], [1, 50, 51, 2, 0, 0]])
    mask = (ids != 0).long()
    out = model(input_ids=ids, attention_mask=mask)
    own = model.seq_model(input_ids=ids, attention_mask=mask).logits[:, 0]
    assert torch.equal(out.last, own)  # the same computation, not a re-implementation
    assert out.values.shape == ids.shape and torch.equal(out.values[:, 0], own)
    if name == "bert":
        bert = model.classifier
        hidden = bert.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]  # (B, H): [CLS]
        by_hand = bert.classifier(torch.tanh(bert.bert.pooler.dense(hidden)))[:, 0]
        # The same operations in the same order on the same values: equal to float32 rounding.
        assert torch.allclose(out.last, by_hand, atol=1e-6)
    # Bidirectional: a token after the first moves the first token's reading.
    moved = ids.clone()
    moved[0, 3] = 60
    assert model(input_ids=moved, attention_mask=mask).last[0] != out.last[0]


def test_a_classifier_label_is_a_reward_read_as_logit_probability_or_log_probability(encoders):
    path = str(encoders["roberta"])
    prompts, completions = ["Say hello.", "Say bye."], ["hello there", "go away now"]
    logit = ClassifierSource(path, label="nothate")(prompts, completions).rewards
    # By hand: the classifier's own logits of the completions alone (a 2-label model reads the text).
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    classifier = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = classifier(**tokenizer(completions, padding=True, return_tensors="pt")).logits
    # One forward of the same padded batch on either side: equal to float32 rounding.
    assert logit == pytest.approx(logits[:, 0].tolist(), abs=1e-6)
    probability = ClassifierSource(path, label="nothate", output="probability")(prompts, completions).rewards
    assert probability == pytest.approx(torch.softmax(logits, -1)[:, 0].tolist(), abs=1e-6)
    by_index = ClassifierSource(path, label="1", output="log_probability")(prompts, completions).rewards
    assert by_index == pytest.approx(torch.log_softmax(logits, -1)[:, 1].tolist(), abs=1e-6)
    with pytest.raises(
        RewardSourceError, match=r"it has 2 labels \(nothate, hate\): name the one that rewards"
    ):
        ClassifierSource(path)
    with pytest.raises(RewardSourceError, match="no label `kind`; its labels are nothate, hate"):
        ClassifierSource(path, label="kind")


def test_reward_sources_read_a_classifier_through_the_same_machinery(encoders):
    """`reward.model` + `reward.label`: a source like any other (weights, sums, names)."""
    cfg = load_config(RewardSourcesConfig, None, [f"model={encoders['bert']}", "label=nothate"])
    reward_fn = build_reward_function(cfg)
    assert isinstance(reward_fn.sources[0].source, ClassifierSource)
    out = reward_fn(["p", "q"], ["a b c", "d e"], [True, True])
    assert all(math.isfinite(r) for r in out.raw.tolist())
    with pytest.raises(Exception, match="read a classifier: set `reward.model`"):
        load_config(RewardSourcesConfig, None, ["function=examples/rewards.py:letter_e", "label=nothate"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("peft", ["none", "lora"])
def test_rlhf_reward_trains_an_encoder_from_a_two_label_checkpoint(encoders, name, peft, tmp_path, capsys):
    """Planted pairs ("please" wins): the encoder reward model must learn them, full and LoRA, say
    that it replaced the head, and then score for `rlhf score` and as PPO's reward."""
    from helpers import planted_comparisons, write_jsonl
    from rlhf.reward.config import RewardConfig
    from rlhf.reward.train import run_reward

    data = write_jsonl(tmp_path / "pairs.jsonl", planted_comparisons(160))
    cfg = load_config(RewardConfig, None, [
        f"model.path={encoders[name]}", "model.dtype=float32", f"peft.method={peft}", f"data.path={data}",
        "data.max_length=48", "eval.fraction=0.25", "max_steps=40", "batch_size=8",
        f"optimizer.lr={3e-3 if peft == 'none' else 1e-2}",
        f"output_dir={tmp_path / 'rm'}", "logging.progress=false", "logging.tensorboard=false",
    ])  # fmt: skip
    summary = run_reward(cfg).summary
    printed = capsys.readouterr().out
    assert "its head is replaced by a new one-label head" in printed and "pooled first token" in printed
    assert summary["final_eval"]["accuracy"] >= 0.8, summary["final_eval"]
    assert summary["packed"] is False  # an encoder attends both ways: never packed
    scorer_cfg = RewardSourcesConfig(model=str(tmp_path / "rm" / "model"))
    scores = build_reward_function(scorer_cfg)(["Say a b."] * 2, ["please a b", "a b"], [True, True]).raw
    assert scores[0] > scores[1]  # the trained reward model, served as a reward source


@pytest.mark.slow
def test_a_classifiers_nothate_logit_rewards_ppo(encoders, tmp_path):
    """The detoxification recipe's reward on a tiny policy: the `nothate` logit of a 2-label
    classifier must rise over the PPO run."""
    from rlhf.ppo import PpoConfig, run_ppo

    demos = str(
        Path(__file__).resolve().parents[1] / "src" / "rlhf" / "assets" / "demo" / "demonstrations.jsonl"
    )
    cfg = load_config(PpoConfig, None, [
        "model.path=builtin:tiny", "peft.method=none", f"data.path={demos}", "data.max_length=64",
        f"reward.model={encoders['roberta']}", "reward.label=nothate", "rollout.prompts_per_step=8",
        "rollout.samples_per_prompt=2", "advantage.estimator=rloo", "rollout.sampling.max_new_tokens=8",
        "minibatch_size=16", "ppo_epochs=2", "optimizer.lr=1e-3", "max_steps=24", "samples_every=0",
        f"output_dir={tmp_path / 'ppo'}", "logging.progress=false", "logging.tensorboard=false",
    ])  # fmt: skip
    rewards = run_ppo(cfg).summary["raw_reward"]
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert last > first, rewards
