"""Best-of-N: the kept draw is the argmax of its prompt's rewards; `rlhf generate --best-of` writes
rows that SFT trains on and that read back as prompts; `rlhf eval policy` with `best_of` reports
the analytic KL and beats plain sampling on the reward that picks; bad settings are one line.

Models are the built-in tiny Llama (random weights: the draws differ) and a tiny random reward
model saved as `rlhf reward` saves one; the hand-checkable scorer counts the letter `a`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.config import ConfigError, DataConfig, ModelConfig, PromptConfig, load_config
from rlhf.data import PromptRenderer, encode_prompt, load_records
from rlhf.eval.config import EvalPolicyConfig
from rlhf.generate import GenerateConfig
from rlhf.generation import SamplingConfig, generate_samples
from rlhf.generation.best_of import analytic_kl, best_index, best_of_n
from rlhf.models import load_lm, load_tokenizer
from rlhf.rewards.config import RewardSourcesConfig
from rlhf.rewards.sources import FunctionSource

RLHF = str(Path(sys.executable).with_name("rlhf"))
COUNT_A = """
def count_a(prompts, completions):
    return [float(c.count("a")) for c in completions]
"""
RM = RewardSourcesConfig(model="rm")
WORDS = ["cats", "rain", "bread", "ships", "tea", "snow", "maps", "salt"]


def write_prompts(path: Path) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"Tell me about {w}.", "id": w}) + "\n" for w in WORDS))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory) -> Path:
    """A tiny random reward model directory, saved the way `rlhf reward` saves one."""
    import torch

    from rlhf.models.scalar import load_scalar_model, save_scalar_model

    cfg = ModelConfig(path="builtin:tiny")
    tokenizer = load_tokenizer(cfg)
    torch.manual_seed(0)
    model = load_scalar_model(cfg, tokenizer=tokenizer, for_training=False)
    path = tmp_path_factory.mktemp("best_of_rm") / "rm"
    save_scalar_model(model, path, tokenizer)
    return path


# ----------------------------------------------------------------------------- selection


def test_best_index_by_hand():
    assert best_index([0.5, 2.0, 1.0]) == 1
    assert best_index([1.0, 3.0, 3.0]) == 1  # a tie goes to the earliest draw
    assert best_index([float("nan"), -5.0, float("inf")]) == 1  # non-finite never beats finite
    assert best_index([float("nan"), float("nan")]) == 0
    # A blank draw is passed over while a non-blank one exists, whatever its reward.
    assert best_index([9.0, 1.0, 2.0], ["  ", "x", "y"]) == 2
    assert best_index([1.0, 9.0], ["", "\n"]) == 1


def test_analytic_kl_by_hand():
    assert analytic_kl(1) == 0.0  # best of 1 is the policy itself
    assert analytic_kl(2) == pytest.approx(math.log(2) - 0.5)  # 0.1931
    assert analytic_kl(4) == pytest.approx(math.log(4) - 0.75)  # 0.6363


def test_best_of_n_keeps_the_argmax_of_each_prompts_draws(tmp_path):
    (tmp_path / "count.py").write_text(COUNT_A)
    scorer = FunctionSource(f"{tmp_path / 'count.py'}:count_a")
    cfg = ModelConfig(path="builtin:tiny", dtype="float32")
    tokenizer = load_tokenizer(cfg, padding_side="left")
    model = load_lm(cfg, for_training=False, tokenizer=tokenizer)
    renderer = PromptRenderer(PromptConfig(template="raw"), tokenizer)
    prompts = [f"Tell me about {w}." for w in WORDS[:4]]
    prompt_ids = [encode_prompt(tokenizer, renderer.render(p)) for p in prompts]
    sampling = SamplingConfig(max_new_tokens=24, seed=3, batch_size=8)

    picks = best_of_n(model, tokenizer, prompt_ids, prompts, sampling, 5, scorer, progress=False)

    # The draws are exactly the sampler's 5 independent samples of each prompt.
    draws = generate_samples(model, tokenizer, prompt_ids, sampling, per_prompt=5, progress=False)
    assert [pick.candidates for pick in picks] == [[s.text for s in group] for group in draws]
    varied = 0
    for pick in picks:
        counts = [float(text.count("a")) for text in pick.candidates]
        assert pick.rewards == counts
        first_max = counts.index(max(counts))
        assert (pick.index, pick.reward, pick.text) == (first_max, max(counts), pick.candidates[first_max])
        assert pick.token_ids == pick.samples[first_max].token_ids
        varied += len(set(counts)) > 1
    assert varied >= 2, [pick.rewards for pick in picks]  # the argmax was a real choice


# ----------------------------------------------------------------------------- rlhf generate


@pytest.mark.slow
def test_generate_best_of_writes_sft_rows_that_train_and_read_as_prompts(tmp_path, reward_model):
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "best.jsonl"
    proc = subprocess.run(
        [
            RLHF, "generate", "--model", "builtin:tiny", "--prompts", str(prompts), "--output", str(out),
            "--best-of", "4", "--reward-model", str(reward_model), "--max-new-tokens", "12",
            "--set", "progress=false", "model.dtype=float32",
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_jsonl(out)
    assert [row["id"] for row in rows] == WORDS  # no prompt had only blank draws
    for row in rows:
        assert row["best_of"] == 4 and len(row["rewards"]) == 4 and len(row["candidates"]) == 4
        best = row["rewards"].index(max(row["rewards"]))
        assert (row["completion"], row["reward"]) == (row["candidates"][best], max(row["rewards"]))
        assert f"Tell me about {row['id']}." in row["rendered_prompt"]
    assert any(len(set(row["rewards"])) == 4 for row in rows)
    kept = sum(row["reward"] for row in rows) / len(rows)
    every = sum(sum(row["rewards"]) for row in rows) / (4 * len(rows))
    assert kept > every
    assert f"mean reward {kept:.4f} of the kept vs {every:.4f} of all samples" in proc.stdout

    sft = load_records(DataConfig(path=str(out)), expect="sft")
    assert sft.format == "prompt_completion"
    assert [r.completion for r in sft.records] == [row["completion"] for row in rows]
    as_prompts = load_records(DataConfig(path=str(out)), expect="prompt")
    assert [r.prompt for r in as_prompts.records] == [f"Tell me about {w}." for w in WORDS]

    from rlhf.sft import SftConfig, run_sft

    cfg = load_config(
        SftConfig, None,
        [
            f"data.path={out}", "model.path=builtin:tiny", "data.max_length=64", "max_steps=2", "batch_size=4",
            f"output_dir={tmp_path / 'sft'}", "logging.progress=false", "logging.tensorboard=false",
        ],
    )  # fmt: skip
    summary = run_sft(cfg).summary
    assert summary["steps"] == 2 and summary["train_tokens"] > 0
    assert len(summary["train_loss"]) == 2 and all(math.isfinite(loss) for loss in summary["train_loss"])
    assert (tmp_path / "sft" / "model" / "config.json").is_file()


# ----------------------------------------------------------------------------- rlhf eval policy


def test_eval_policy_best_of_4_beats_plain_sampling_with_the_analytic_kl(tmp_path, reward_model, capsys):
    from rlhf.cli.main import main

    prompts = write_prompts(tmp_path / "prompts.jsonl")
    policy = "builtin:tiny"
    args = [
        "eval", "policy", "--model", policy, "--baseline", policy, "--prompts", str(prompts),
        "--reward", str(reward_model), "--best-of", "4", "--output-dir", str(tmp_path / "out"),
        "--set", "sampling.max_new_tokens=12", "progress=false", "prompt.template=raw", "model.dtype=float32",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert result["best_of"] == 4
    assert result["compute"] == {"samples_per_prompt": {"policy": 4, "baseline": 1}}
    assert result["kl"]["analytic"] is True
    assert result["kl"]["sequence"]["mean"] == pytest.approx(math.log(4) - 3 / 4)
    assert "KL(best-of-4 ‖ policy): 0.636 nats per answer" in printed
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    for row in rows:
        rewards = row["policy_candidate_rewards"]
        assert row["policy_scores"]["reward"] == max(rewards)
        assert row["policy"] == row["policy_candidates"][rewards.index(max(rewards))]
    # The baseline is the same model answering with one plain sample (the best_of 1 run).
    policy_mean = result["policy_scores"]["reward"]["mean"]
    baseline_mean = result["baseline_scores"]["reward"]["mean"]
    assert policy_mean > baseline_mean, (policy_mean, baseline_mean)
    assert result["win_rate"]["reward"]["rate"] > 0.5


# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"best_of": 0}, "`best_of` must be at least 1 (1: off), got 0"),
        ({"best_of": 4}, "`best_of` 4 needs `reward`"),
        (
            {"best_of": 4, "reward": RM, "samples_per_prompt": 2},
            "`samples_per_prompt` must be 1 with `best_of` 4",
        ),
        ({"best_of": 2, "reward": RM, "sampling": SamplingConfig(temperature=0)}, "temperature"),
        ({"reward": RM}, "`reward` is only used with `best_of` above 1"),
    ],
)
def test_generate_config_errors_are_one_line(kwargs, message):
    with pytest.raises(ConfigError) as err:
        GenerateConfig(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"best_of": 0}, "`best_of` must be at least 1"),
        ({"best_of": 4}, "set `best_of_reward` or `reward`"),
        ({"best_of": 4, "reward": RM, "reference": "ref"}, "`reference` cannot be used with `best_of` 4"),
        ({"best_of_reward": RM}, "`best_of_reward` is only used with `best_of` above 1"),
    ],
)
def test_eval_config_errors_are_one_line(kwargs, message):
    with pytest.raises(ConfigError) as err:
        EvalPolicyConfig(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_cli_best_of_without_reward_model_is_one_line_with_status_2(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    proc = subprocess.run(
        [RLHF, "generate", "--model", "builtin:tiny", "--prompts", str(prompts), "--best-of", "4"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--reward-model DIR" in proc.stderr
