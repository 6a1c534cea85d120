"""A real 2-process run (torchrun, gloo on CPU) of the shared Accelerate training loop."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import dist_env, planted_rankings
from rlhf.tracking import read_metrics
from tolerance import reorder_tol

SCRIPT = Path(__file__).parent / "dist" / "train_step.py"


@pytest.mark.slow
def test_two_process_gloo_training_step(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dist_env()
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,  # the script's collectives time out after 60 s, so this only catches a stuck launcher
    )
    assert proc.returncode == 0, proc.stderr[-6000:]  # on a hang: the faulthandler stacks of the ranks
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    for rep in reports:
        assert rep["num_processes"] == 2
        assert rep["steps"] == 4
        assert rep["changed_tensors"] == rep["total_tensors"]
    assert "gloo" in reports[0]["backend"]
    # The two processes read disjoint shards that together cover the data ...
    assert not set(reports[0]["seen"]) & set(reports[1]["seen"])
    assert set(reports[0]["seen"]) | set(reports[1]["seen"]) == set(range(16))
    # ... and all-reduced gradients kept their weights identical.
    assert reports[0]["checksum"] == reports[1]["checksum"]
    # Logged losses are all-reduced, so both ranks hold the very same numbers (no rounding between them).
    assert reports[0]["losses"] == reports[1]["losses"]
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]


SFT_ARGS = [
    "data.path=src/rlhf/assets/demo/demonstrations.jsonl",
    "data.max_length=96",
    "optimizer.lr=3e-3",
    "max_steps=6",
    "eval.fraction=0.2",
    "eval.every=3",
    "logging.progress=false",
    "logging.tensorboard=false",
]


@pytest.mark.slow
def test_two_process_sft_matches_one_process_with_the_same_global_batch(tmp_path):
    """torchrun x2 with batch 2 per process = one process with batch 4: same rows, same token weighting."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dist_env()
    two = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rlhf.cli.main", "sft", "--set",
         *SFT_ARGS, "batch_size=2", f"output_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run(
        [str(Path(sys.executable).with_name("rlhf")), "sft", "--set", *SFT_ARGS, "batch_size=4",
         f"output_dir={tmp_path / 'one'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-4000:]
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two")]
    # Token means of next-token NLLs (each about log 512 = 6.2) over a step's 4 rows of up to 96
    # tokens, summed in another order, after up to 6 updates.
    tol = reorder_tol(6.2, 4 * 96, updates=6)
    assert summaries[1]["train_loss"] == pytest.approx(summaries[0]["train_loss"], abs=tol)
    assert [e["loss"] for e in summaries[1]["eval"]] == pytest.approx(
        [e["loss"] for e in summaries[0]["eval"]], abs=tol
    )
    assert summaries[1]["train_tokens"] == summaries[0]["train_tokens"]
    # Only the main process wrote the model, and it loads.
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "model")


@pytest.mark.slow
def test_two_process_reward_matches_one_process_with_the_same_global_batch(tmp_path):
    """torchrun x2 with batch 2 per process = one process with batch 4: every prompt weighs 1 whatever
    its number of pairs and wherever it lands (in the loss and in the centering penalty), and
    evaluation gathers every held-out score."""
    from helpers import write_jsonl

    data = write_jsonl(tmp_path / "rankings.jsonl", planted_rankings(40))
    args = [
        f"data.path={data}", "data.max_length=64", "prompt.template=raw", "optimizer.lr=3e-3",
        "optimizer.warmup_steps=0", "optimizer.warmup_ratio=0", "max_steps=6", "eval.fraction=0.25",
        "eval.every=3", "eval.batch_size=2", "logging.log_every=1", "logging.progress=false",
        "logging.tensorboard=false", "centering=0.1",  # the centering penalty is per prompt, step-wide too
    ]  # fmt: skip
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dist_env()
    two = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rlhf.cli.main", "reward", "--set",
         *args, "batch_size=2", f"output_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run(
        [str(Path(sys.executable).with_name("rlhf")), "reward", "--set", *args, "batch_size=4",
         f"output_dir={tmp_path / 'one'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-4000:]
    one_sum, two_sum = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))

    # The same groups, pairs and held-out split.
    assert two_sum["data"] == one_sum["data"]
    assert one_sum["data"]["groups"] == 30 and one_sum["data"]["pairs"] > one_sum["data"]["groups"]
    assert two_sum["steps"] == one_sum["steps"] == 6
    # Pair losses (about log 2 each) and rewards (scalar-head outputs: sums over the 64 hidden units,
    # each well under 1) averaged over a step's 4 groups of up to 6 pairs, or the 34 held-out pairs,
    # in another order, after up to 6 updates. The reward level moves with the head's sums.
    loss_tol = reorder_tol(0.7, 34, updates=6)
    level_tol = reorder_tol(1.0, 64 + 34, updates=6)
    assert two_sum["train_loss"] == pytest.approx(one_sum["train_loss"], abs=loss_tol)
    # Held-out evaluation: each process scored half the groups; the gathered scores are all of them.
    assert [e["step"] for e in two_sum["eval"]] == [e["step"] for e in one_sum["eval"]] == [0, 3, 6]
    for mine, theirs in zip(two_sum["eval"], one_sum["eval"]):
        counts = ("groups", "completions", "pairs")
        assert [mine[k] for k in counts] == [theirs[k] for k in counts] == [10, 32, 34]
        for key in ("loss", "accuracy", "margin"):
            assert mine[key] == pytest.approx(theirs[key], abs=loss_tol), key
        for key in ("mean", "std", "min", "max"):
            assert mine["rewards"][key] == pytest.approx(theirs["rewards"][key], abs=level_tol), key
    # The saved normalization statistics (over every training completion, gathered the same way).
    extras = [
        json.loads((tmp_path / name / "model" / "rlhf_scalar.json").read_text()) for name in ("one", "two")
    ]
    assert extras[1]["num_completions"] == extras[0]["num_completions"] == one_sum["data"]["completions"]
    assert extras[1]["reward_mean"] == pytest.approx(extras[0]["reward_mean"], abs=level_tol)
    assert extras[1]["reward_std"] == pytest.approx(extras[0]["reward_std"], abs=level_tol)
    # Only the main process logged: the same rows as one process.
    rows = [[(r["step"], sorted(r)) for r in read_metrics(tmp_path / name)] for name in ("one", "two")]
    assert rows[1] == rows[0]


PPO_SCRIPT = Path(__file__).parent / "dist" / "ppo_ranks.py"
PPO_ARGS = [
    "model.path=builtin:tiny",
    "data.path=src/rlhf/assets/demo/demonstrations.jsonl",
    "data.max_length=96",
    "max_steps=4",
    "rollout.prompts_per_step=2",  # per process
    "rollout.samples_per_prompt=2",
    "rollout.sampling.max_new_tokens=6",
    "minibatch_size=2",
    "ppo_epochs=2",
    "optimizer.lr=1e-3",
    "peft.method=lora",
    "samples_every=0",
    "logging.log_every=1",
    "logging.progress=false",
    "logging.tensorboard=false",
]


def finite_list(values) -> bool:
    import math

    return bool(values) and all(isinstance(v, float) and math.isfinite(v) for v in values)


@pytest.mark.slow
def test_two_process_ppo_keeps_the_processes_in_sync(tmp_path):
    """torchrun x2 of `run_ppo` (LoRA, shared value head, GAE, running reward statistics): each process
    samples its own prompts, yet both hold the same policy at every step and at the end; checkpoints
    keep one RNG state per process."""
    import torch

    run_dir = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    args = [
        *PPO_ARGS, 'reward.sources=[{function: "examples/rewards.py:letter_e", normalize: running}]',
        "save_every=2", f"output_dir={run_dir}",
    ]  # fmt: skip
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(PPO_SCRIPT), str(tmp_path), *args],
        capture_output=True, text=True, env=dist_env(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]  # on a hang: the faulthandler stacks of the ranks
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in reports] == [2, 2]

    # Each step the two processes sampled different prompts (the stream hands out disjoint shares) ...
    assert len(reports[0]["prompts"]) == len(reports[1]["prompts"]) == 4
    for mine, theirs in zip(reports[0]["prompts"], reports[1]["prompts"]):
        assert len(mine) == len(theirs) == 4
        assert mine != theirs
    # ... but sampled from the same weights: all-reduced gradients kept the adapters identical ...
    # Both processes apply the same all-reduced gradients to the same weights (identical float32
    # operations); 1e-9 relative admits only float64 rounding of the checksum's own sum.
    assert reports[0]["checksums"] == pytest.approx(reports[1]["checksums"], rel=1e-9, abs=1e-12)
    assert len(set(reports[0]["checksums"])) == 4  # and they did train
    # ... through the last update: the final policy (merged on the main process, still an adapter
    # on the other) and value head compute the same.
    # LoRA merged into W on one process, W + BA on the other: each of the 2 layers' outputs sums its
    # 64 (attention) and 192 (MLP) inputs rounded another way; log-probs are about 6 in size, values about 1.
    merge_tol = reorder_tol(1.0, 2 * (64 + 192))
    assert reports[0]["logprobs"] == pytest.approx(reports[1]["logprobs"], abs=6.2 * merge_tol)
    assert reports[0]["values"] == pytest.approx(reports[1]["values"], abs=merge_tol)
    assert reports[0]["value_head_sum"] == pytest.approx(reports[1]["value_head_sum"], rel=1e-9)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["estimator"] == "gae"
    for key in ("reward", "raw_reward", "kl", "policy_loss", "value_loss"):
        assert len(summary[key]) == 4 and finite_list(summary[key]), (key, summary[key])
    assert (run_dir / "policy" / "config.json").is_file() and (run_dir / "critic").is_dir()
    # Only the main process logged, each step once.
    assert [r["step"] for r in read_metrics(run_dir) if "ppo/reward/normalized" in r] == [1, 2, 3, 4]

    # The checkpoint of step 2 (the one at step 4 is the final output instead): one RNG file per
    # process, holding different streams (each process samples its own completions).
    from rlhf.training.checkpoint import list_checkpoints

    checkpoint = list_checkpoints(run_dir)[-1]
    assert checkpoint.name == "step-000002"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["num_processes"] == 2
    states = [torch.load(checkpoint / "rng" / f"rank-{r}.pt", weights_only=False) for r in (0, 1)]
    assert not torch.equal(states[0]["torch"], states[1]["torch"])
    extra = torch.load(checkpoint / "extra.pt", weights_only=False)
    assert extra["value"]["weight"].shape[0] == 1
    assert extra["reward"]["moments"]  # the running reward statistics


@pytest.mark.slow
def test_two_process_critic_free_ppo_from_the_cli(tmp_path):
    """torchrun x2 of `rlhf ppo` with REINFORCE: its baseline is gathered across processes."""
    run_dir = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rlhf.cli.main", "ppo", "--set",
         *PPO_ARGS, "reward.function=examples/rewards.py:letter_e", "advantage.estimator=reinforce", "save_every=3", f"output_dir={run_dir}"],
        capture_output=True, text=True, env=dist_env(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["estimator"] == "reinforce"
    for key in ("reward", "raw_reward", "kl", "policy_loss"):
        assert len(summary[key]) == 4 and finite_list(summary[key]), (key, summary[key])
    assert summary["value_loss"] == [None] * 4
    assert (run_dir / "policy" / "config.json").is_file() and not (run_dir / "critic").exists()
    import torch

    from rlhf.training.checkpoint import list_checkpoints

    checkpoint = list_checkpoints(run_dir)[-1]
    assert checkpoint.name == "step-000003"
    assert sorted(p.name for p in (checkpoint / "rng").iterdir()) == ["rank-0.pt", "rank-1.pt"]
    extra = torch.load(checkpoint / "extra.pt", weights_only=False)
    assert extra["value"] == {} and extra["value_optimizer"] is None
    assert extra["baseline"]  # the moving baseline, the same on every process


@pytest.mark.slow
def test_two_process_ppo_matches_one_process_with_greedy_rollouts(tmp_path):
    """Greedy decoding makes the rollouts a function of the prompts alone, and the prompt stream gives
    2 processes x 2 prompts what 1 process x 4 gets; with one minibatch per epoch (the whole
    rollout), every step's losses, KL and advantages' whitening must then agree: the token counts,
    whitening statistics and running reward statistics are all taken over both processes."""
    args = [
        "model.path=builtin:tiny", "data.path=src/rlhf/assets/demo/demonstrations.jsonl", "data.max_length=96",
        "max_steps=3", "rollout.samples_per_prompt=1", "rollout.sampling.temperature=0",
        "rollout.sampling.max_new_tokens=6", "ppo_epochs=2", "optimizer.lr=1e-3", "peft.method=lora",
        'reward.sources=[{function: "examples/rewards.py:letter_e", normalize: running}]',
        "samples_every=0", "logging.progress=false", "logging.tensorboard=false",
    ]  # fmt: skip
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rlhf.cli.main", "ppo", "--set", *args,
         "rollout.prompts_per_step=2", "minibatch_size=2", f"output_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=dist_env(), timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run(
        [str(Path(sys.executable).with_name("rlhf")), "ppo", "--set", *args, "rollout.prompts_per_step=4",
         "minibatch_size=4", f"output_dir={tmp_path / 'one'}"],
        capture_output=True, text=True, env=dist_env(), timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-4000:]
    a = json.loads((tmp_path / "one" / "summary.json").read_text())
    b = json.loads((tmp_path / "two" / "summary.json").read_text())
    # Each is a mean over the step's 4 sequences x up to 6 response tokens (24 terms) taken in another
    # order, after up to 2 updates per earlier step. The size of the terms, not of the result, sets
    # the rounding: the policy loss at step 1 is ~3e-4 but sums whitened advantages x ratios (~1) that
    # cancel; the KL subtracts log-probs (~log 512 = 6.2); value losses square returns of ~1; the
    # running-normalized rewards divide by a float64 std of ~1.
    scales = {"reward": 1.0, "raw_reward": 1.0, "kl": 6.2, "policy_loss": 1.0, "value_loss": 1.0}
    for key, scale in scales.items():
        assert b[key] == pytest.approx(a[key], abs=reorder_tol(scale, 24, updates=2 * 3)), key
    assert max(abs(x) for x in a["policy_loss"]) > 0  # the comparison is not of zeros
