"""A real 2-process run (torchrun, gloo on CPU) of the shared Accelerate training loop."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.tracking import read_metrics

SCRIPT = Path(__file__).parent / "dist" / "train_step.py"


def dist_env() -> dict[str, str]:
    # Gloo on the loopback interface: a hostname that resolves to another address can stall it.
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GLOO_SOCKET_IFNAME": "lo",
    }


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
    # Logged losses are averaged over processes, so both ranks report the same numbers.
    assert reports[0]["losses"] == pytest.approx(reports[1]["losses"])
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
         *SFT_ARGS, "batch_size=2", f"logging.output_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run(
        [str(Path(sys.executable).with_name("rlhf")), "sft", "--set", *SFT_ARGS, "batch_size=4",
         f"logging.output_dir={tmp_path / 'one'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-4000:]
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two")]
    assert summaries[1]["train_loss"] == pytest.approx(summaries[0]["train_loss"], abs=1e-5)
    assert [e["loss"] for e in summaries[1]["eval"]] == pytest.approx(
        [e["loss"] for e in summaries[0]["eval"]], abs=1e-5
    )
    assert summaries[1]["train_tokens"] == summaries[0]["train_tokens"]
    # Only the main process wrote the model, and it loads.
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "model")


def planted_rankings(n: int) -> list[dict]:
    """Rankings of 2, 3 or 4 completions (1, 3 or 6 pairs): the more "please", the better. Every
    other one of 3 or 4 has its two worst tied (a pair fewer with `ties: skip`)."""
    import random

    from test_reward_train import WORDS

    rng = random.Random(1)
    rows = []
    for i in range(n):
        k = 2 + i % 3
        ranks = [min(r, k - 2) if k > 2 and i % 2 else r for r in range(k)]
        words = lambda: [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]  # noqa: E731
        ranked = [(" ".join([*words(), *["please"] * (k - 1 - r)]), r) for r in ranks]
        rng.shuffle(ranked)
        rows.append(
            {
                "prompt": f"Say {rng.choice(WORDS)} {rng.choice(WORDS)}.",
                "completions": [text for text, _ in ranked],
                "ranks": [rank for _, rank in ranked],
            }
        )
    return rows


@pytest.mark.slow
def test_two_process_reward_matches_one_process_with_the_same_global_batch(tmp_path):
    """torchrun x2 with batch 2 per process = one process with batch 4: every prompt weighs 1 whatever
    its number of pairs and wherever it lands (in the loss and in the centering penalty), and
    evaluation gathers every held-out score."""
    from test_reward_train import write_jsonl

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
         *args, "batch_size=2", f"logging.output_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run(
        [str(Path(sys.executable).with_name("rlhf")), "reward", "--set", *args, "batch_size=4",
         f"logging.output_dir={tmp_path / 'one'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-4000:]
    one_sum, two_sum = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))

    # The same groups, pairs and held-out split.
    assert two_sum["data"] == one_sum["data"]
    assert one_sum["data"]["groups"] == 30 and one_sum["data"]["pairs"] > one_sum["data"]["groups"]
    assert two_sum["steps"] == one_sum["steps"] == 6
    assert two_sum["train_loss"] == pytest.approx(one_sum["train_loss"], abs=1e-5)
    # Held-out evaluation: each process scored half the groups; the gathered scores are all of them.
    assert [e["step"] for e in two_sum["eval"]] == [e["step"] for e in one_sum["eval"]] == [0, 3, 6]
    for mine, theirs in zip(two_sum["eval"], one_sum["eval"]):
        counts = ("groups", "completions", "pairs")
        assert [mine[k] for k in counts] == [theirs[k] for k in counts] == [10, 32, 34]
        for key in ("loss", "accuracy", "margin"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-5), key
        # Reward levels drift a little more than losses (the offset is free under a pairwise loss).
        for key in ("mean", "std", "min", "max"):
            assert mine["rewards"][key] == pytest.approx(theirs["rewards"][key], abs=5e-5), key
    # The saved normalization statistics (over every training completion, gathered the same way).
    extras = [
        json.loads((tmp_path / name / "model" / "rlhf_scalar.json").read_text()) for name in ("one", "two")
    ]
    assert extras[1]["num_completions"] == extras[0]["num_completions"] == one_sum["data"]["completions"]
    assert extras[1]["reward_mean"] == pytest.approx(extras[0]["reward_mean"], abs=5e-5)
    assert extras[1]["reward_std"] == pytest.approx(extras[0]["reward_std"], abs=5e-5)
    # Only the main process logged: the same rows as one process.
    rows = [[(r["step"], sorted(r)) for r in read_metrics(tmp_path / name)] for name in ("one", "two")]
    assert rows[1] == rows[0]
