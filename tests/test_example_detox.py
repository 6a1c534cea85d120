"""examples/detox offline: the detoxification recipe (a FLAN-T5 policy with LoRA, PPO against a
hate-speech classifier's `nothate` logit, evaluated before and after by the classifier) run as
written, on tiny models built here instead of the hub's: a random T5 in FLAN-T5's layout and a tiny
RoBERTa trained on a toy corpus to tell hateful sentences from kind ones (`tiny_models`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import dist_env
from tiny_models import build_seq2seq, build_toy_hate_classifier

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RLHF = str(Path(sys.executable).with_name("rlhf"))
OFFLINE = [
    "data.path=examples/detox/dialogues.jsonl", "data.max_length=256", "data.max_prompt_length=192",
    "logging.progress=false", "logging.tensorboard=false",
]  # fmt: skip
"""What the offline run changes in examples/detox/ppo.yaml: the local dialogues (the hub's dialogsum
layout), shorter sequences for the tiny models."""


def rlhf(*args: str) -> str:
    proc = subprocess.run(
        [RLHF, *args], capture_output=True, text=True, env=dist_env(), cwd=ROOT, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_the_detox_recipe_raises_the_classifier_reward_offline(tmp_path):
    policy = build_seq2seq(tmp_path / "flan-t5-tiny", "t5", init="varied")
    classifier = build_toy_hate_classifier(tmp_path / "hate-classifier")
    run = tmp_path / "ppo"
    # A tiny random policy needs more samples per step than the recipe's 16 (and a lighter KL leash):
    # 8 prompts x 2 samples, 2 epochs, one minibatch; LoRA at a tiny model's learning rate.
    out = rlhf("ppo", "--config", "examples/detox/ppo.yaml", "--set", f"model.path={policy}",
               f"reward.model={classifier}", *OFFLINE, "peft.lora_rank=8", "rollout.prompts_per_step=8",
               "rollout.samples_per_prompt=2", "ppo_epochs=2", "minibatch_size=16", "kl.controller=fixed",
               "kl.coef=0.05", "rollout.sampling.max_new_tokens=12", "optimizer.lr=1e-2", "max_steps=24",
               f"output_dir={run}")  # fmt: skip
    assert "[engine] rollouts sampled by hf" in out and "value head on the policy's hidden states" in out
    summary = json.loads((run / "summary.json").read_text())
    rewards = summary["raw_reward"]  # the `nothate` logit of each step's summaries, averaged
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    # Measured over seeds 0-5 (`seed=`): a rise of 0.51 to 2.92 (the logit spans about [-3, 3]).
    assert last > first + 0.3, rewards

    evaluation = tmp_path / "eval"
    rlhf("eval", "policy", "--config", "examples/detox/eval.yaml", "--set", f"model.path={run / 'policy'}",
         f"baseline={policy}", f"reward.model={classifier}", *OFFLINE[:3], "sampling.max_new_tokens=12",
         f"metrics=[{{model: {classifier}, label: hate, output: probability, name: toxicity}}]",
         f"output_dir={evaluation}", "progress=false")  # fmt: skip
    result = json.loads((evaluation / "eval.json").read_text())
    before, after = result["baseline_scores"]["reward"]["mean"], result["policy_scores"]["reward"]["mean"]
    # P(nothate) of each model's sampled summaries of the 24 dialogues, by the classifier.
    assert after > before, (before, after)
    # Toxicity (P(hate), the same classifier's other label) fell by as much (two labels' softmax sums
    # to 1 within float32 rounding, ~1e-7 a value), and ROUGE against the dialogues' own summaries
    # (`reference_field: summary`) was measured for both.
    toxicity = result["metric_differences"]["toxicity"]
    assert toxicity["mean"] == pytest.approx(before - after, abs=1e-6) and toxicity["n"] == 24
    assert {"rouge1", "rouge2", "rougeL", "exact_match"} <= set(result["policy_metrics"])
    print(f"P(nothate) before {before:.3f}, after {after:.3f}; reward {first:.3f} -> {last:.3f}")
