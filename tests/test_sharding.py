"""Sharded training on the real engines, 2 CPU processes over gloo: FSDP2 (torch's `fully_shard`) and
DeepSpeed ZeRO-2/3, launched as a user would (`accelerate launch --config_file examples/accelerate/...`).

Each run must (1) really shard (each process holds about half of the trained state), (2) compute
what one process computes with the same global batch, (3) resume a killed run on the same curve, and
(4) gather the final model into one directory that plain transformers loads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import dist_env, free_port, kill_at_first_checkpoint, planted_rankings, write_jsonl
from tolerance import LOGPROB, TINY_TERMS, reorder_tol

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {e: f"{e}.yaml" for e in ("fsdp2", "zero2", "zero3", "zero3_offload")}
ENGINE_LINES = {
    "fsdp2": "FSDP2 full shard", "zero2": "DeepSpeed ZeRO-2", "zero3": "DeepSpeed ZeRO-3",
    "zero3_offload": "DeepSpeed ZeRO-3 (CPU offload: optimizer, param)",
}  # fmt: skip
QUIET = ["logging.progress=false", "logging.tensorboard=false", "logging.log_every=1"]
SFT = [
    "data.path=src/rlhf/assets/demo/demonstrations.jsonl", "data.max_length=96", "optimizer.lr=3e-3",
    "max_steps=6", "eval.fraction=0.2", "eval.every=3", "save_every=3", *QUIET,
]  # fmt: skip


@pytest.fixture(autouse=True)
def _zero_needs_deepspeed(request):
    """Only the DeepSpeed runs need DeepSpeed (scripts/setup.sh installs its CPU build): without it
    they skip, and the FSDP2 runs, which need torch alone, still run."""
    callspec = getattr(request.node, "callspec", None)
    params = [str(value) for value in callspec.params.values()] if callspec else []
    if any("zero" in value or "DEEPSPEED" in value.upper() for value in params):
        pytest.importorskip("deepspeed", reason="scripts/setup.sh installs DeepSpeed (its CPU build)")


def launch_cmd(engine: str, stage: str, args: list[str], out: Path, *extra: str) -> list[str]:
    return [
        str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "examples" / "accelerate" / CONFIGS[engine]),
        "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "rlhf.cli.main", stage, *extra,
        "--set", *args, f"output_dir={out}",
    ]  # fmt: skip


def env() -> dict[str, str]:
    # DeepSpeed builds its CPU communication op once per machine (about 30 s, cached under ~/.cache).
    return {**dist_env(), "DS_ACCELERATOR": "cpu"}


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    return proc.stdout


def one_process(stage: str, args: list[str], out: Path) -> dict:
    run([str(BIN / "rlhf"), stage, "--set", *args, f"output_dir={out}"])
    return json.loads((out / "summary.json").read_text())


def sharded(engine: str, stage: str, args: list[str], out: Path) -> dict:
    stdout = run(launch_cmd(engine, stage, args, out))
    assert f"[distributed] {ENGINE_LINES[engine]}, 2 process(es)" in stdout
    summary = json.loads((out / "summary.json").read_text())
    check_really_sharded(summary, engine)
    return summary


def check_really_sharded(summary: dict, engine: str) -> None:
    """Each process holds its half of what the engine splits (parameters under FSDP2 and ZeRO-3,
    the fp32 master weights under ZeRO-2), not a replica: at most half plus the padding and
    rounding of uneven shards (a few hundred elements of 131k)."""
    held = summary["sharding"]["held"]
    assert summary["sharding"]["processes"] == 2 and len(held) == 2
    assert all(0.45 <= share <= 0.55 for share in held), held
    assert sum(held) >= 1.0 - 1e-9  # together they hold all of it
    assert len(summary["peak_memory_gib"]) == 2


GATHER_TOL = 1e-4
"""Gathered final weights vs one process's. Adam divides each gradient by its own running size, so
where a gradient is mostly rounding noise its step can differ by up to lr (3e-3) per update: no
useful bound follows from the sums. What the comparison must catch is a wrong gather (a shard
misplaced, a process's half missing, stale weights), which is off by the weights' own size (the tiny
Llama's init std is 0.02): 1e-4 is 200x below that and 15x above the largest difference measured
(6.8e-6 after 6 steps)."""


def assert_same_weights(a: Path, b: Path, tol: float) -> None:
    """Both directories load in plain transformers and hold the same tensors (to `tol`)."""
    import torch
    from transformers import AutoModelForCausalLM

    first, second = (AutoModelForCausalLM.from_pretrained(path) for path in (a, b))
    for (name, x), (_, y) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.allclose(x, y, atol=tol, rtol=0), name


# ------------------------------------------------------------------------------------------ sft


@pytest.fixture(scope="module")
def sft_alone(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("sft-one")
    return one_process("sft", [*SFT, "batch_size=4"], out), out


@pytest.mark.parametrize("engine", ["fsdp2", "zero2", "zero3", "zero3_offload"])
def test_sft_on_two_processes_matches_one_and_gathers_the_model(engine, sft_alone, tmp_path):
    """2 processes x batch 2 under the engine = 1 process x batch 4, step by step, and the gathered
    final model equals the one-process model."""
    alone, alone_dir = sft_alone
    mine = sharded(engine, "sft", [*SFT, "batch_size=2"], tmp_path)
    # Token-weighted NLLs (~6) of a step's 4 rows summed in another order and shape (shards, reduce-
    # scatter), through the tiny Llama's sums, after up to 6 updates.
    tol = reorder_tol(LOGPROB, TINY_TERMS, updates=6)
    assert mine["train_loss"] == pytest.approx(alone["train_loss"], abs=tol)
    assert [e["loss"] for e in mine["eval"]] == pytest.approx([e["loss"] for e in alone["eval"]], abs=tol)
    assert_same_weights(tmp_path / "model", alone_dir / "model", tol=GATHER_TOL)
    assert (tmp_path / "checkpoints" / "step-000003" / "sharded").is_dir()


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, "FSDP2 full shard"),
        (
            {
                "ACCELERATE_USE_DEEPSPEED": "true",
                "ACCELERATE_DEEPSPEED_CONFIG_FILE": "examples/accelerate/zero3_offload.json",
            },
            "DeepSpeed ZeRO-3 (CPU offload: optimizer, param)",
        ),
    ],
)
def test_torchrun_with_the_engine_in_environment_variables(variables, says, sft_alone, tmp_path):
    """`torchrun` instead of `accelerate launch`: the engine chosen by the variables Accelerate reads
    (as the README shows) really shards, and computes what one process does (as above)."""
    out = tmp_path / "run"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "rlhf.cli.main", "sft",
           "--set", *SFT, "batch_size=2", f"output_dir={out}"]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**env(), **variables}, cwd=ROOT, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert f"[distributed] {says}, 2 process(es)" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    check_really_sharded(summary, "zero3")
    alone, _ = sft_alone
    tol = reorder_tol(LOGPROB, TINY_TERMS, updates=6)  # as above
    assert summary["train_loss"] == pytest.approx(alone["train_loss"], abs=tol)


@pytest.mark.parametrize(
    ("config", "says"), [("fsdp2_2nodes", "FSDP2 full shard"), ("zero3_2nodes", "DeepSpeed ZeRO-3")]
)
def test_the_two_node_configs_launch_as_two_machines(config, says, sft_alone, tmp_path):
    """The shipped two-node configs, launched as the README says on two "machines" (two launchers
    on this one, machine rank 0 and 1, one process each, meeting at 127.0.0.1): one run over both
    that shards and computes what one process does."""
    out, port = tmp_path / "run", str(free_port())
    logs = [tmp_path / f"machine-{rank}.log" for rank in (0, 1)]  # files: a full pipe would stall a launcher
    procs = []
    for rank, log in enumerate(logs):
        with log.open("w") as sink:
            procs.append(subprocess.Popen(
                [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "examples" / "accelerate" / f"{config}.yaml"),
                 "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                 "--main_process_port", port, "-m", "rlhf.cli.main", "sft", "--set", *SFT, "batch_size=2",
                 f"output_dir={out}"],
                stdout=sink, stderr=subprocess.STDOUT, text=True, env=env(), cwd=ROOT, start_new_session=True,
            ))  # fmt: skip
    try:
        for proc, log in zip(procs, logs):
            assert proc.wait(timeout=600) == 0, log.read_text()[-6000:]
    finally:  # one machine failing leaves the other waiting for it: stop both, workers included
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert f"[distributed] {says}, 2 process(es)" in logs[0].read_text()
    summary = json.loads((out / "summary.json").read_text())
    check_really_sharded(summary, config)
    alone, _ = sft_alone
    tol = reorder_tol(LOGPROB, TINY_TERMS, updates=6)  # as above
    assert summary["train_loss"] == pytest.approx(alone["train_loss"], abs=tol)


@pytest.mark.parametrize("engine", ["fsdp2", "zero3"])
def test_killed_sharded_run_resumes_on_the_same_curve(engine, tmp_path):
    """LoRA on a sharded base: a run SIGKILLed after its step-3 checkpoint resumes from the shards and
    ends on the very losses of an uninterrupted run; its adapter loads on the base with peft."""
    args = [*SFT, "batch_size=2", "peft.method=lora", "max_steps=5"]
    whole = sharded(engine, "sft", args, tmp_path / "whole")
    proc = subprocess.Popen(
        launch_cmd(engine, "sft", args, tmp_path / "killed"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, env=env(), cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    kill_at_first_checkpoint(proc, group=True)
    assert not (tmp_path / "killed" / "summary.json").exists()
    stdout = run(launch_cmd(engine, "sft", args, tmp_path / "killed", "--resume"))
    assert "[resume] from" in stdout and "at step 3" in stdout
    resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert resumed["resumed_from_step"] == 3
    # The same operations in the same order after the restore (weights, optimizer, RNG, data
    # position): only the float32 rounding of the ~6 losses in the log could differ.
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], abs=reorder_tol(LOGPROB, 1))
    # The adapters gathered at the end: the same operations in the same order give the same bits.
    from safetensors.torch import load_file

    adapters = [
        load_file(tmp_path / run / "model" / "adapter_model.safetensors") for run in ("whole", "killed")
    ]
    assert adapters[0].keys() == adapters[1].keys() and len(adapters[0]) > 0
    for name, tensor in adapters[0].items():
        assert tensor.equal(adapters[1][name]), name


# --------------------------------------------------------------------------- reward, dpo, rrhf


def preference_args(tmp_path: Path, stage: str) -> list[str]:
    data = write_jsonl(tmp_path / "rankings.jsonl", planted_rankings(40 if stage != "rrhf" else 24))
    args = [
        f"data.path={data}", "data.max_length=64", "prompt.template=raw", "optimizer.lr=3e-3",
        "optimizer.warmup_ratio=0", "max_steps=4", "eval.fraction=0.25", "eval.batch_size=2", *QUIET,
    ]  # fmt: skip
    return args + (["beta=0.5"] if stage == "dpo" else [])


@pytest.mark.parametrize(
    ("stage", "engine"), [("reward", "fsdp2"), ("reward", "zero2"), ("dpo", "zero3"), ("rrhf", "zero3")]
)  # every stage and every engine at least once (DPO with LoRA on both sharded engines is below)
def test_preference_stages_on_two_processes_match_one(stage, engine, tmp_path):
    """The reward model, DPO and RRHF under the engine: the same losses as one process with the same
    global batch, evaluation over every held-out group, and a gathered final model."""
    args = preference_args(tmp_path, stage)
    alone = one_process(stage, [*args, "batch_size=4"], tmp_path / "one")
    mine = sharded(engine, stage, [*args, "batch_size=2"], tmp_path / "two")
    assert mine["data"] == alone["data"]
    # Pair losses (~0.7), or length-normalized log-probs (~6) for RRHF, over a step's 4 groups of
    # up to 6 pairs or the held-out groups (up to 34 pairs), in another order, after 4 updates.
    scale, terms = (LOGPROB, 4 * 4 * 12) if stage == "rrhf" else (1.0, 34)
    tol = reorder_tol(scale, terms, updates=4)
    assert mine["train_loss"] == pytest.approx(alone["train_loss"], abs=tol)
    for theirs, ours in zip(alone["eval"], mine["eval"]):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=tol)
    saved = "model" if stage == "reward" else "policy"
    assert (tmp_path / "two" / saved / "model.safetensors").is_file()
    if stage != "reward":
        assert_same_weights(tmp_path / "two" / saved, tmp_path / "one" / saved, tol=GATHER_TOL)


@pytest.mark.parametrize("engine", ["fsdp2", "zero3"])
def test_dpo_with_lora_on_a_sharded_base(engine, tmp_path):
    """DPO with LoRA on a sharded base: the reference is the same model with its adapter switched off,
    the losses are one process's, and the exported policy is merged (plain transformers loads it)."""
    args = [*preference_args(tmp_path, "dpo"), "peft.method=lora", "peft.lora_rank=4", "peft.lora_dropout=0"]
    alone = one_process("dpo", [*args, "batch_size=4"], tmp_path / "one")
    mine = sharded(engine, "dpo", [*args, "batch_size=2"], tmp_path / "two")
    tol = reorder_tol(1.0, 34, updates=4)  # as for full fine-tuning above
    assert mine["train_loss"] == pytest.approx(alone["train_loss"], abs=tol)
    assert_same_weights(tmp_path / "two" / "policy", tmp_path / "one" / "policy", tol=GATHER_TOL)


# ------------------------------------------------------------------------------------------ ppo

PPO = [
    "model.path=builtin:tiny", "data.path=src/rlhf/assets/demo/demonstrations.jsonl", "data.max_length=96",
    "max_steps=3", "rollout.samples_per_prompt=1", "rollout.sampling.temperature=0",
    "rollout.sampling.max_new_tokens=6", "ppo_epochs=2", "optimizer.lr=1e-3", "samples_every=0",
    'reward.sources=[{function: "examples/rewards.py:letter_e", normalize: running}]', *QUIET,
]  # fmt: skip


@pytest.mark.parametrize(
    ("engine", "peft"),
    [("fsdp2", "lora"), ("fsdp2", "none"), ("zero3", "lora"), ("zero3", "none"), ("zero2", "none")],
)
def test_ppo_sharded_matches_one_process(engine, peft, tmp_path):
    """PPO with a shared critic under FSDP2 or DeepSpeed: the policy and its value head sharded,
    generation from the shards, the reference the adapter switched off (LoRA) or a whole frozen copy
    (full). With greedy rollouts, 2 processes x 2 prompts compute what 1 process x 4 does (as with
    DDP in test_distributed), and the gathered policy is the one process's. DeepSpeed clips the
    policy's and the value head's gradients together (one engine), one process each on its own, so
    there the comparison runs without clipping."""
    clip = ["optimizer.max_grad_norm=null"] if engine.startswith("zero") else []
    args = [*PPO, f"peft.method={peft}", "save_every=2", *clip]
    alone = one_process("ppo", [*args, "rollout.prompts_per_step=4", "minibatch_size=4"], tmp_path / "one")
    mine = sharded(engine, "ppo", [*args, "rollout.prompts_per_step=2", "minibatch_size=2"], tmp_path / "two")
    # As in test_distributed's DDP comparison: means over a step's 4 sequences x up to 6 tokens (24
    # terms) in another order, after up to 2 updates per earlier step, at the size of their terms.
    scales = {"reward": 1.0, "kl": LOGPROB, "policy_loss": 1.0, "value_loss": 1.0}
    for key, scale in scales.items():
        assert mine[key] == pytest.approx(alone[key], abs=reorder_tol(scale, 24, updates=2 * 3)), key
    assert max(abs(x) for x in alone["policy_loss"]) > 0 and max(abs(x) for x in alone["kl"]) > 0
    assert (tmp_path / "two" / "checkpoints" / "step-000002" / "sharded").is_dir()
    assert_same_weights(tmp_path / "two" / "policy", tmp_path / "one" / "policy", tol=GATHER_TOL)
    from transformers import AutoModelForSequenceClassification

    critic = AutoModelForSequenceClassification.from_pretrained(tmp_path / "two" / "critic")
    assert critic.config.num_labels == 1  # the value head as a classifier plain transformers loads


@pytest.mark.parametrize("engine", ["fsdp2", "zero3"])
def test_killed_sharded_ppo_resumes_on_the_same_curve(engine, tmp_path):
    """RLOO with LoRA and PPO-ptx under FSDP2 or ZeRO-3, sampled: a run SIGKILLed after its step-2
    checkpoint resumes from the shards (policy, optimizer, RNG of each process, reward statistics,
    the ptx data position) to the very rewards, KL and losses of an uninterrupted run, and the same
    final policy."""
    args = [
        *PPO, "peft.method=lora", "max_steps=4", "save_every=2", "advantage.estimator=rloo",
        "rollout.samples_per_prompt=2", "rollout.sampling.temperature=1.0", "rollout.prompts_per_step=2",
        "minibatch_size=2", "loss.ptx_coef=0.5", "loss.ptx_data.path=src/rlhf/assets/demo/demonstrations.jsonl",
    ]  # fmt: skip
    whole = sharded(engine, "ppo", args, tmp_path / "whole")
    proc = subprocess.Popen(
        launch_cmd(engine, "ppo", args, tmp_path / "killed"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, env=env(), cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    kill_at_first_checkpoint(proc, group=True)
    stdout = run(launch_cmd(engine, "ppo", args, tmp_path / "killed", "--resume"))
    assert "[resume] from" in stdout
    resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert resumed["resumed_from_step"] == 2
    # The same operations in the same order after the restore: the same numbers.
    for key in ("reward", "raw_reward", "kl", "policy_loss"):
        assert resumed[key] == whole[key], key
    assert_same_weights(tmp_path / "killed" / "policy", tmp_path / "whole" / "policy", tol=0.0)


@pytest.mark.parametrize(
    ("engine", "extra", "says"),
    [
        (
            "zero3",
            ["critic.mode=separate"],
            "on DeepSpeed ZeRO-3 PPO's critic is a value head on the policy (`critic.mode: shared`)",
        ),
        (
            "fsdp2",
            ["critic.mode=separate"],
            "PPO's critic is a value head on the policy (`critic.mode: shared`)",
        ),
    ],
)
def test_ppo_refuses_what_it_does_not_shard_in_one_line(engine, extra, says, tmp_path):
    """A separate critic is refused before any model loads, in one line, on either engine."""
    proc = subprocess.run(
        launch_cmd(engine, "ppo", [*PPO, "max_steps=1", *extra], tmp_path), capture_output=True, text=True,
        env=env(), cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and says in errors[0], proc.stderr[-2000:]
    assert "[model]" not in proc.stdout
