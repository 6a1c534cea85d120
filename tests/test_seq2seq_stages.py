"""Every stage on encoder-decoder policies, in the family test's style: tiny random T5 (the FLAN-T5
layout) and BART, full fine-tuning, LoRA and QLoRA (bitsandbytes' CPU 4-bit), through sft, reward
(an encoder-decoder reward model), dpo, ipo, cdpo, rrhf, ppo with a shared value head and with a
separate critic, eval, generate with best-of-N and SFT on its rows (rejection sampling) and export;
every PPO estimator, PPO-ptx and prompt tuning on T5; SFT that must learn; 2 processes and FSDP2
against one; a run killed after its checkpoint resumed on the same curve; the pipeline."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import dist_env, free_port, kill_at_first_checkpoint
from tiny_models import SEQ2SEQ, build_seq2seq
from tolerance import LOGPROB, reorder_tol

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEMOS = str(ROOT / "src" / "rlhf" / "assets" / "demo" / "demonstrations.jsonl")
PAIRS = str(ROOT / "tests" / "fixtures" / "data" / "public" / "shp.jsonl")
RANKINGS = str(ROOT / "tests" / "fixtures" / "data" / "public" / "nectar.jsonl")
GOLD = "examples/rewards.py:letter_e"
QUIET = ["logging.progress=false", "logging.tensorboard=false"]
TERMS = 4 * (32 + 64)
"""Additions behind each output of the tiny encoder-decoders (as in test_seq2seq)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Each architecture near uniform (to train), and peaked (`peaked-<name>`: greedy rollouts with
    no near-ties, so that batches of other shapes pick the same tokens)."""
    root = tmp_path_factory.mktemp("seq2seq-models")
    built = {name: build_seq2seq(root / name, name) for name in SEQ2SEQ}
    return {
        **built,
        **{f"peaked-{n}": build_seq2seq(root / f"peaked-{n}", n, init="peaked") for n in SEQ2SEQ},
    }


def quietly(run, cfg):
    with contextlib.redirect_stdout(io.StringIO()):
        return run(cfg).summary


def finite(values) -> bool:
    return bool(values) and all(v is not None and math.isfinite(v) for v in values)


def architecture(directory: Path) -> str:
    return json.loads((directory / "config.json").read_text())["architectures"][0]


@pytest.mark.parametrize("peft", ["lora", "qlora", "none"])
@pytest.mark.parametrize("name", list(SEQ2SEQ))
def test_every_stage_runs_on_the_encoder_decoder(name, peft, models, tmp_path):
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

    model = models[name]
    common = [f"model.path={model}", "data.max_length=64", f"peft.method={peft}", *QUIET]
    trained = ["max_steps=2", "batch_size=2", "eval.fraction=0"]
    conservative = ["loss_type=conservative", "label_smoothing=0.1"]  # cDPO
    ppo = [f"data.path={DEMOS}", "max_steps=1", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
           "minibatch_size=4", "rollout.sampling.max_new_tokens=4", f"reward.function={GOLD}",
           "samples_every=0"]  # fmt: skip
    runs = {
        "sft": (run_sft, SftConfig, [f"data.path={DEMOS}", *trained], "train_loss"),
        "reward": (run_reward, RewardConfig, [f"data.path={PAIRS}", *trained], "train_loss"),
        "dpo": (run_dpo, DpoConfig, [f"data.path={PAIRS}", *trained], "train_loss"),
        "ipo": (run_dpo, DpoConfig, [f"data.path={PAIRS}", "loss_type=ipo", *trained], "train_loss"),
        "cdpo": (run_dpo, DpoConfig, [f"data.path={PAIRS}", *conservative, *trained], "train_loss"),
        "rrhf": (run_rrhf, RrhfConfig, [f"data.path={RANKINGS}", *trained], "train_loss"),
        "ppo": (run_ppo, PpoConfig, ppo, "value_loss"),
        "ppo_separate_critic": (run_ppo, PpoConfig, [*ppo, "critic.mode=separate"], "value_loss"),
    }
    for stage, (run, cls, args, key) in runs.items():
        out = tmp_path / stage
        summary = quietly(run, load_config(cls, None, [*common, *args, f"output_dir={out}"]))
        assert finite(summary[key]), (stage, summary[key])
        written = out / ("model" if stage in ("sft", "reward") else "policy")
        if stage == "reward" and (written / "config.json").is_file():
            assert architecture(written).endswith("ForSequenceClassification")
        elif (written / "config.json").is_file():  # a merged or fully trained policy
            assert architecture(written).endswith("ForConditionalGeneration"), stage
        else:  # an adapter (SFT's LoRA, QLoRA's): on the whole encoder-decoder, or its classifier
            task = json.loads((written / "adapter_config.json").read_text())["task_type"]
            assert task == ("SEQ_CLS" if stage == "reward" else "SEQ_2_SEQ_LM"), stage
    if peft == "none":
        _evaluates_and_generates(model, tmp_path)


def _evaluates_and_generates(model: Path, tmp_path: Path) -> None:
    """`rlhf eval policy` (the PPO policy against the starting model, judged by the encoder-decoder
    reward model trained above and the gold function) and best-of-N by that reward model."""
    from rlhf.config import load_config
    from rlhf.eval.config import EvalPolicyConfig
    from rlhf.eval.policy import run_eval_policy
    from rlhf.generate import GenerateConfig, run_generate
    from rlhf.sft.config import SftConfig
    from rlhf.sft.train import run_sft

    reward_model = tmp_path / "reward" / "model"
    cfg = load_config(EvalPolicyConfig, None, [
        f"model.path={tmp_path / 'ppo' / 'policy'}", f"baseline={model}", f"data.path={DEMOS}", "data.limit=3",
        f"reward.model={reward_model}", f"gold={GOLD}", "sampling.max_new_tokens=4",
        f"output_dir={tmp_path / 'eval'}", "progress=false",
    ])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_eval_policy(cfg)
    assert math.isfinite(result["kl"]["sequence"]["mean"]), result["kl"]
    output = tmp_path / "best.jsonl"
    cfg = load_config(GenerateConfig, None, [
        f"model.path={model}", f"data.path={DEMOS}", "data.limit=3", "sampling.max_new_tokens=4", "best_of=3",
        f"reward.model={reward_model}", f"output={output}", "progress=false",
    ])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        run_generate(cfg)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 3 and all(row["reward"] == max(row["rewards"]) for row in rows)
    # Rejection-sampling fine-tuning: SFT on the kept rows as they are.
    args = [f"model.path={model}", f"data.path={output}", "max_steps=1", "batch_size=3"]
    cfg = load_config(SftConfig, None, [*args, "eval.fraction=0", f"output_dir={tmp_path / 'rs'}", *QUIET])
    assert finite(quietly(run_sft, cfg)["train_loss"])


def test_every_estimator_ptx_and_prompt_tuning_on_t5(models, tmp_path):
    """RLOO, GRPO and REINFORCE (critic-free) and GAE with PPO-ptx on a T5 policy; SFT with prompt
    tuning (peft's virtual tokens go in front of the encoder's input)."""
    from rlhf.config import load_config
    from rlhf.ppo.config import PpoConfig
    from rlhf.ppo.train import run_ppo
    from rlhf.sft.config import SftConfig
    from rlhf.sft.train import run_sft

    common = [f"model.path={models['t5']}", "data.max_length=64", *QUIET]
    ppo = [*common, f"data.path={DEMOS}", "max_steps=2", "rollout.prompts_per_step=2",
           "rollout.samples_per_prompt=2", "minibatch_size=4", "rollout.sampling.max_new_tokens=4",
           f"reward.function={GOLD}", "samples_every=0"]  # fmt: skip
    for estimator in ("rloo", "grpo", "reinforce"):
        summary = quietly(run_ppo, load_config(PpoConfig, None, [
            *ppo, f"advantage.estimator={estimator}", f"output_dir={tmp_path / estimator}"]))  # fmt: skip
        assert summary["estimator"] == estimator and finite(summary["policy_loss"]), estimator
    summary = quietly(run_ppo, load_config(PpoConfig, None, [
        *ppo, "loss.ptx_coef=0.5", f"loss.ptx_data.path={DEMOS}", f"output_dir={tmp_path / 'ptx'}"]))  # fmt: skip
    ptx = [json.loads(line).get("ppo/ptx_loss") for line in (tmp_path / "ptx" / "metrics.jsonl").open()]
    # The answers' NLL under a near-uniform 512-token model: about log 512.
    assert all(abs(v - math.log(512)) < 0.5 for v in ptx if v is not None) and any(ptx)
    summary = quietly(run_sft, load_config(SftConfig, None, [
        *common, f"data.path={DEMOS}", "peft.method=prompt_tuning", "max_steps=2", "batch_size=2",
        "eval.fraction=0", f"output_dir={tmp_path / 'prompt'}"]))  # fmt: skip
    assert finite(summary["train_loss"])
    adapter = json.loads((tmp_path / "prompt" / "model" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "PROMPT_TUNING" and adapter["task_type"] == "SEQ_2_SEQ_LM"


WORDS = [
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "sun",
    "moon",
    "tree",
    "fish",
    "bird",
    "king",
    "ship",
    "rain",
    "snow",
    "gold",
    "milk",
]


@pytest.mark.parametrize(("name", "lr"), [("t5", 2e-2), ("bart", 1e-2)])
def test_sft_teaches_an_encoder_decoder_to_copy_its_prompt(models, name, lr, tmp_path):
    """ "Repeat: fish sun blue" -> " fish sun blue", three of 16 words: the decoder can only write the
    answer by reading the encoder. After 300 steps greedy decoding must copy held-out prompts (word
    triples it never saw); a model blind to its prompt copies one with probability 1/3360."""
    import random

    from helpers import write_jsonl
    from rlhf.config import ModelConfig, load_config
    from rlhf.config.core import ConfigError
    from rlhf.generation.config import SamplingConfig
    from rlhf.generation.sampling import sample_sequences
    from rlhf.models import load_lm, load_tokenizer
    from rlhf.sft.config import SftConfig
    from rlhf.sft.train import run_sft

    rng = random.Random(0)
    rows = [" ".join(rng.sample(WORDS, 3)) for _ in range(240)]
    data = write_jsonl(
        tmp_path / "copy.jsonl", [{"prompt": f"Repeat: {w}", "completion": f" {w}"} for w in rows]
    )
    args = [f"model.path={models[name]}", f"data.path={data}", "data.max_length=64", "prompt.template=raw",
            "max_steps=300", "batch_size=8", f"optimizer.lr={lr}", "eval.fraction=0.2", "eval.every=300",
            f"output_dir={tmp_path / 'run'}", *QUIET]  # fmt: skip
    summary = quietly(run_sft, load_config(SftConfig, None, args))
    assert summary["eval"][0]["loss"] > 6.0 > 2.0 > summary["eval"][-1]["loss"], summary["eval"]
    trained = ModelConfig(path=str(tmp_path / "run" / "model"))
    model, tokenizer = load_lm(trained, for_training=False), load_tokenizer(trained)
    unseen: list[str] = []
    while len(unseen) < 48:  # triples the run never trained on
        triple = " ".join(rng.sample(WORDS, 3))
        if triple not in rows and triple not in unseen:
            unseen.append(triple)
    ids = [tokenizer(f"Repeat: {w}")["input_ids"] for w in unseen]
    out = sample_sequences(
        model, tokenizer, ids, SamplingConfig(temperature=0, max_new_tokens=16), progress=False
    )
    copied = sum(sample.text.strip() == w for sample, w in zip(out, unseen))
    assert copied >= len(unseen) // 4, [s.text for s in out[:5]]
    with pytest.raises(ConfigError, match="`completion_only: false` trains on the prompt's tokens too"):
        run_sft(load_config(SftConfig, None, [*args, "completion_only=false"]), overwrite=True)


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dist_env(), cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    return proc.stdout


SFT = [f"data.path={DEMOS}", "data.max_length=96", "optimizer.lr=3e-3", "max_steps=4", "eval.fraction=0.2",
       "eval.every=2", "save_every=2", *QUIET]  # fmt: skip
PPO = [f"data.path={DEMOS}", "data.max_length=96", "max_steps=3", "rollout.samples_per_prompt=1",
       "rollout.sampling.temperature=0", "rollout.sampling.max_new_tokens=6", "ppo_epochs=2", "optimizer.lr=1e-3",
       "peft.method=none", "samples_every=0", "save_every=2",
       'reward.sources=[{function: "examples/rewards.py:letter_e", normalize: running}]', *QUIET]  # fmt: skip


def _launch(how: str, stage: str, args: list[str], out: Path) -> dict:
    """`stage` on 2 processes (`ddp`: torchrun; `fsdp2`: accelerate launch with the example config)."""
    if how == "ddp":
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    else:
        cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "examples/accelerate/fsdp2.yaml"),
               "--num_processes", "2", "--main_process_port", str(free_port())]  # fmt: skip
    stdout = _run([*cmd, "-m", "rlhf.cli.main", stage, "--set", *args, f"output_dir={out}"])
    assert ("FSDP2 full shard" if how == "fsdp2" else "[distributed]") in stdout
    return json.loads((out / "summary.json").read_text())


def _alone(stage: str, args: list[str], out: Path) -> dict:
    _run([str(BIN / "rlhf"), stage, "--set", *args, f"output_dir={out}"])
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("how", ["fsdp2"])
def test_two_processes_compute_what_one_does_on_t5(models, how, tmp_path):
    """SFT with 2 processes x batch 2 = 1 process x batch 4, and PPO with greedy rollouts on 2 x 2
    prompts = 1 x 4, on T5 under FSDP2 (the encoder's and decoder's embeddings in one shard unit, see
    `one_embedding_module`); the gathered models load whole. (`_launch` also runs DDP through
    torchrun; plain data parallelism is the decoder-only tests' — test_distributed — and is kept out
    of this one for the suite's time.)"""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    model = f"model.path={models['t5']}"
    alone = _alone("sft", [model, *SFT, "batch_size=4"], tmp_path / "sft-one")
    mine = _launch(how, "sft", [model, *SFT, "batch_size=2"], tmp_path / "sft-two")
    # Token-weighted NLLs (about 6.2) of a step's 4 rows, summed in another order and shape, after
    # up to 4 updates.
    tol = reorder_tol(LOGPROB, TERMS, updates=4)
    assert mine["train_loss"] == pytest.approx(alone["train_loss"], abs=tol)
    assert [e["loss"] for e in mine["eval"]] == pytest.approx([e["loss"] for e in alone["eval"]], abs=tol)
    one, two = (AutoModelForSeq2SeqLM.from_pretrained(tmp_path / d / "model") for d in ("sft-one", "sft-two"))
    for (key, x), (_, y) in zip(one.state_dict().items(), two.state_dict().items()):
        # Adam's steps where a gradient is rounding noise differ by up to lr per update (see
        # test_sharding's GATHER_TOL); a misplaced shard is off by the weights' own size (~0.05).
        assert torch.allclose(x, y, atol=1e-4, rtol=0), key

    model = f"model.path={models['peaked-t5']}"
    alone = _alone(
        "ppo", [model, *PPO, "rollout.prompts_per_step=4", "minibatch_size=4"], tmp_path / "ppo-one"
    )
    mine = _launch(
        how, "ppo", [model, *PPO, "rollout.prompts_per_step=2", "minibatch_size=2"], tmp_path / "ppo-two"
    )
    # Means over a step's 4 sequences x up to 6 tokens (24 terms) in another order, after up to 2
    # updates per earlier step, at the size of their terms (as test_distributed's DDP comparison).
    for key, scale in {"reward": 1.0, "kl": LOGPROB, "policy_loss": 1.0, "value_loss": 1.0}.items():
        assert mine[key] == pytest.approx(alone[key], abs=reorder_tol(scale, 24, updates=2 * 3)), key
    assert min(abs(x) for x in alone["policy_loss"]) > 1e-3 < max(alone["kl"])  # not a comparison of zeros
    assert architecture(tmp_path / "ppo-two" / "policy") == "T5ForConditionalGeneration"


@pytest.mark.parametrize("stage", ["sft", "ppo"])
def test_a_killed_encoder_decoder_run_resumes_on_the_same_curve(models, stage, tmp_path):
    """SIGKILLed right after its step-2 checkpoint, resumed with --resume: the same losses as the run
    that was never interrupted (the same computation from the same state: float32 rounding at most)."""
    args = [
        f"model.path={models['bart' if stage == 'sft' else 'peaked-bart']}",
        *(SFT if stage == "sft" else PPO),
    ]
    args += ["batch_size=2"] if stage == "sft" else ["rollout.prompts_per_step=2", "minibatch_size=2"]
    whole = _alone(stage, [*args, "max_steps=4"], tmp_path / "whole")
    cmd = [str(BIN / "rlhf"), stage, "--set", *args, "max_steps=4", f"output_dir={tmp_path / 'killed'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dist_env())
    kill_at_first_checkpoint(proc)
    _run([*cmd[:2], "--resume", *cmd[2:]])
    resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    key = "train_loss" if stage == "sft" else "policy_loss"
    assert resumed[key] == pytest.approx(whole[key], abs=reorder_tol(LOGPROB, TERMS, updates=4)), key
    assert resumed.get("resumed") is True


def test_the_pipeline_runs_on_a_t5_policy(models, tmp_path):
    """`rlhf pipeline` from a T5 checkpoint: SFT, sampling, simulated labels, a T5 reward model, PPO
    rewarded by it (its critic a value head on the policy's decoder), evaluation and the report."""
    from helpers import pipeline_config, statuses
    from rlhf.pipeline.run import run_pipeline

    cfg = pipeline_config(tmp_path, f"sft.model.path={models['t5']}")
    summary = run_pipeline(cfg, log=lambda _: None)
    assert set(statuses(summary).values()) == {"ran"}
    run = Path(cfg.output_dir)
    assert architecture(run / "sft" / "model") == "T5ForConditionalGeneration"
    assert architecture(run / "reward" / "model") == "T5ForSequenceClassification"
    assert architecture(run / "ppo" / "policy") == "T5ForConditionalGeneration"
    assert (run / "report.html").is_file()
