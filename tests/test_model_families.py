"""Every stage on every common model family: tiny random configurations of Llama, Qwen2, Qwen3,
Mistral, Gemma 2, Gemma 3, Phi-3, GPT-2, OPT and GPT-NeoX (the project's own tiny tokenizer), full
fine-tuning and LoRA: sft, reward, dpo, rrhf, ppo with a shared value head and with a separate
critic, eval (the PPO policy against the family's model, judged by the reward model trained here
and a gold function) and generate. A few steps each; every loss must be finite and every output
written."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SIZE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 256}  # fmt: skip
FAMILIES = {
    "llama": ("llama", {**SIZE, "num_key_value_heads": 2}),
    "qwen2": ("qwen2", {**SIZE, "num_key_value_heads": 2}),
    "qwen3": ("qwen3", {**SIZE, "num_key_value_heads": 2, "head_dim": 8}),
    "mistral": ("mistral", {**SIZE, "num_key_value_heads": 2}),
    "gemma2": ("gemma2", {**SIZE, "num_key_value_heads": 2, "head_dim": 8}),
    "gemma3": ("gemma3_text", {**SIZE, "num_key_value_heads": 2, "head_dim": 8}),
    "phi3": ("phi3", {**SIZE, "num_key_value_heads": 2}),  # peft has no LoRA default for it
    "gpt2": ("gpt2", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256}),
    "opt": ("opt", {**SIZE, "ffn_dim": 64, "word_embed_proj_dim": 32}),
    "gpt_neox": ("gpt_neox", SIZE),
}
ROOT = Path(__file__).resolve().parent.parent
DEMOS = str(ROOT / "src" / "rlhf" / "assets" / "demo" / "demonstrations.jsonl")
PAIRS = str(ROOT / "tests" / "fixtures" / "data" / "public" / "shp.jsonl")
RANKINGS = str(ROOT / "tests" / "fixtures" / "data" / "public" / "nectar.jsonl")
GOLD = "examples/rewards.py:letter_e"
QUIET = ["logging.progress=false", "logging.tensorboard=false"]


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> Path:
    """A directory per family: a randomly initialised tiny model and the tiny tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlhf.models.tiny import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("families")
    tokenizer = build_tiny_tokenizer()
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}  # fmt: skip
    for name, (model_type, size) in FAMILIES.items():
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **size, **ids)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


def quietly(run, cfg):
    with contextlib.redirect_stdout(io.StringIO()):
        return run(cfg).summary


def finite(values) -> bool:
    return bool(values) and all(v is not None and math.isfinite(v) for v in values)


@pytest.mark.parametrize("peft", ["lora", "none"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_stage_runs_on_the_family(family, peft, families, tmp_path):
    from rlhf.config import load_config
    from rlhf.dpo.config import DpoConfig
    from rlhf.dpo.train import run_dpo
    from rlhf.ppo.config import PpoConfig
    from rlhf.ppo.train import run_ppo
    from rlhf.reward.config import RewardConfig
    from rlhf.reward.train import run_reward
    from rlhf.rrhf import RrhfConfig
    from rlhf.rrhf.train import run_rrhf
    from rlhf.sft.config import SftConfig
    from rlhf.sft.train import run_sft

    model = families / family
    common = [f"model.path={model}", "data.max_length=64", f"peft.method={peft}", *QUIET]
    trained = ["max_steps=2", "batch_size=2", "eval.fraction=0"]
    runs = {
        "sft": (run_sft, SftConfig, [f"data.path={DEMOS}", *trained], "train_loss"),
        "reward": (run_reward, RewardConfig, [f"data.path={PAIRS}", *trained], "train_loss"),
        "dpo": (run_dpo, DpoConfig, [f"data.path={PAIRS}", *trained], "train_loss"),
        "rrhf": (run_rrhf, RrhfConfig, [f"data.path={RANKINGS}", *trained], "train_loss"),
    }
    ppo = [f"data.path={DEMOS}", "max_steps=1", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
           "minibatch_size=4", "rollout.sampling.max_new_tokens=4", f"reward.function={GOLD}",
           "samples_every=0"]  # fmt: skip
    runs["ppo"] = (run_ppo, PpoConfig, ppo, "value_loss")
    runs["ppo_separate_critic"] = (run_ppo, PpoConfig, [*ppo, "critic.mode=separate"], "value_loss")
    for stage, (run, cls, args, key) in runs.items():
        out = tmp_path / stage
        summary = quietly(run, load_config(cls, None, [*common, *args, f"output_dir={out}"]))
        assert finite(summary[key]), (stage, summary[key])
        saved = [
            out / name / file
            for name in ("model", "policy")
            for file in ("config.json", "adapter_config.json")
        ]
        assert any(path.is_file() for path in saved), stage  # a model, or SFT's LoRA adapter
    _evaluates(model, tmp_path)
    if peft == "none":
        _generates(model, tmp_path)


def _evaluates(model: Path, tmp_path: Path) -> None:
    """`rlhf eval policy`: the PPO policy against the family's model, by the reward model trained
    above and the gold function: a finite KL, and every prompt scored by both."""
    from rlhf.config import load_config
    from rlhf.eval.config import EvalPolicyConfig
    from rlhf.eval.policy import run_eval_policy

    policy = tmp_path / "ppo" / "policy"
    cfg = load_config(EvalPolicyConfig, None, [
        f"model.path={policy}", f"baseline={model}", f"data.path={DEMOS}", "data.limit=3",
        f"reward.model={tmp_path / 'reward' / 'model'}", f"gold={GOLD}", "sampling.max_new_tokens=4",
        f"output_dir={tmp_path / 'eval'}", "progress=false",
    ])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_eval_policy(cfg)
    assert math.isfinite(result["kl"]["sequence"]["mean"]), result["kl"]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(set(row["policy_scores"]) == {"reward", "gold"} for row in rows), rows[0]


def _generates(model: Path, tmp_path: Path) -> None:
    from rlhf.config import load_config
    from rlhf.generate import GenerateConfig, run_generate

    output = tmp_path / "candidates.jsonl"
    cfg = load_config(GenerateConfig, None, [
        f"model.path={model}", f"data.path={DEMOS}", "data.limit=3", "sampling.max_new_tokens=4",
        "samples_per_prompt=2", f"output={output}", "progress=false",
    ])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        run_generate(cfg)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 3 and all(len(row["completions"]) == 2 for row in rows)
