"""`rlhf eval policy` on real tiny models: identical policies tie with zero KL; a different policy
has a positive KL whose per-token read-out equals a plain forward of each sequence; gold scores
and win rates follow the answers in samples.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf.models import build_tiny_model, save_tiny
from rlhf.models.readout import completion_logprobs
from tolerance import LOGPROB, TINY_TERMS, reorder_tol

RLHF = str(Path(sys.executable).with_name("rlhf"))
GOLD = """
def count_e(prompts, completions):
    return [float(c.count("e")) for c in completions]
"""


def rlhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RLHF, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture
def setup(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"Tell me about {w}."}) + "\n"
            for w in ["cats", "rain", "bread", "ships", "tea", "snow"]
        )
    )
    (tmp_path / "gold.py").write_text(GOLD)
    return prompts, tmp_path / "gold.py"


def test_token_logprobs_equal_a_plain_forward_of_each_sequence():
    model, _ = build_tiny_model(seed=3)
    model.eval()
    prompts = [[1, 5, 9, 12], [1, 7], [1, 3, 3, 3, 3, 3]]
    completions = [[40, 41, 42], [50], [60, 61]]
    got = completion_logprobs(model, prompts, completions, batch_size=2, temperature=0.7)
    for p, c, row in zip(prompts, completions, got):
        ids = torch.tensor([p + c])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float() / 0.7, dim=-1)
        want = [logp[len(p) - 1 + t, tok].item() for t, tok in enumerate(c)]
        # Batches of 2 read at completion positions against each sequence alone: one forward's sums
        # rounded another way, on log-probs of about log 512.
        assert row == pytest.approx(want, abs=reorder_tol(LOGPROB, TINY_TERMS))


@pytest.mark.slow
def test_same_policy_ties_with_zero_kl(setup, tmp_path):
    prompts, gold = setup
    model = save_tiny(tmp_path / "m", seed=0)
    proc = rlhf(
        "eval", "policy", "--model", str(model), "--baseline", str(model), "--prompts", str(prompts),
        "--gold", f"{gold}:count_e", "--output-dir", str(tmp_path / "out"),
        "--set", "sampling.max_new_tokens=12", "progress=false", "prompt.template=raw",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert result["kl"]["sequence"]["mean"] == pytest.approx(0.0, abs=1e-6)
    # Same weights and the same seed: the same answers, so every prompt is a tie.
    w = result["win_rate"]["gold"]
    assert (w["ties"], w["rate"]) == (6, 0.5)
    assert "win rate of the policy by gold: 0.500" in proc.stdout


@pytest.mark.slow
def test_different_policy_kl_gold_and_win_rate(setup, tmp_path):
    prompts, gold = setup
    policy, baseline = save_tiny(tmp_path / "p", seed=1), save_tiny(tmp_path / "b", seed=2)
    proc = rlhf(
        "eval", "policy", "--model", str(policy), "--baseline", str(baseline), "--prompts", str(prompts),
        "--gold", f"{gold}:count_e", "--output-dir", str(tmp_path / "out"),
        "--set", "sampling.max_new_tokens=16", "progress=false", "prompt.template=raw",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert row["policy_scores"]["gold"] == row["policy"].count("e")
        assert row["baseline_scores"]["gold"] == row["baseline"].count("e")
    wins = sum(r["policy_scores"]["gold"] > r["baseline_scores"]["gold"] for r in rows)
    ties = sum(r["policy_scores"]["gold"] == r["baseline_scores"]["gold"] for r in rows)
    assert result["win_rate"]["gold"]["rate"] == pytest.approx((wins + ties / 2) / 6)
    # Two unrelated random models (near-uniform, so the gap is small): the policy's own samples
    # are likelier under itself than under the reference.
    assert result["kl"]["sequence"]["mean"] > 0.1 and result["kl"]["tokens"] > 0
    assert result["policy_scores"]["gold"]["mean"] == pytest.approx(
        sum(r["policy_scores"]["gold"] for r in rows) / 6
    )


@pytest.mark.slow
def test_bad_gold_function_is_one_line(setup, tmp_path):
    prompts, gold = setup
    proc = rlhf(
        "eval", "policy", "--model", "builtin:tiny", "--prompts", str(prompts), "--gold", f"{gold}:nope"
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "nope" in proc.stderr
