"""`rlhf dpo`: the sequence read-out, learning runs, reference modes, LoRA, rankings, errors, torchrun."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf.config.core import ConfigError
from rlhf.dpo import DpoConfig, run_dpo
from rlhf.models.readout import completion_logprobs
from rlhf.models.tiny import build_tiny_model
from rlhf.preference.groups import Group
from rlhf.preference.sequences import SequenceLogps, collate_sequences, packing_isolates
from tolerance import LOGPROB, TINY_TERMS, reorder_tol

# DPO with the cached reference against the live one: beta (<= 0.5) x the 4 sequence sums of up to 12
# log-probs behind each pair's margin, rounded in other batches, carried over up to 8 updates.
DPO_LIVE_TOL = 0.5 * 4 * reorder_tol(LOGPROB, 12 * TINY_TERMS, updates=8)

WORDS = ["cat", "dog", "sun", "moon", "tree", "river", "stone", "cloud", "bird", "fish"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def planted_pairs(n: int, seed: int = 0) -> list[dict]:
    """The chosen answer ends in "yes", the rejected one in "no" after the same words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(3))
        rows.append(
            {
                "prompt": f"Say something about {rng.choice(WORDS)}.",
                "chosen": words + " yes",
                "rejected": words + " no",
            }
        )
    return rows


def config(tmp_path: Path, data: Path, name: str = "run", **fields) -> DpoConfig:
    from rlhf.config.core import from_dict

    base = {
        "model": {"path": "builtin:tiny"},
        "data": {"path": str(data), "max_length": 64},
        "optimizer": {"lr": 1e-3, "warmup_ratio": 0.0},
        "beta": 0.5,
        "batch_size": 8,
        "max_steps": 12,
        "output_dir": str(tmp_path / name),
        "logging": {
            "progress": False,
            "tensorboard": False,
            "log_every": 1,
        },
    }
    for key, value in fields.items():
        node = base
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return from_dict(DpoConfig, base)


def test_sequence_logps_padded_and_packed_equal_a_plain_forward():
    model, tok = build_tiny_model(0)
    model.eval()
    groups = []
    for prompt, completions in [
        ("Hello there", [" a cat", " the dog sat on a mat"]),
        ("Q: x?", [" yes", " no no", " hm"]),
    ]:
        ids = tok(prompt)["input_ids"]
        seqs = [ids + tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions]
        groups.append(
            Group(prompt, seqs, [float(i) for i in range(len(seqs))], prompt_lens=[len(ids)] * len(seqs))
        )
    prompts = [s[: g.prompt_lens[0]] for g in groups for s in g.input_ids]
    completions = [s[g.prompt_lens[0] :] for g in groups for s in g.input_ids]
    expected = [sum(t) for t in completion_logprobs(model, prompts, completions, pad_id=tok.pad_token_id)]
    module = SequenceLogps(model)
    with torch.no_grad():
        padded = collate_sequences(groups, tok.pad_token_id)
        packed = collate_sequences(groups, tok.pad_token_id, pack_width=64)
        assert packed.input_ids.shape[0] == 1 and padded.input_ids.shape[0] == 5
        for batch in (padded, packed):
            out = module(**batch.inputs())
            # Sums of up to 12 token log-probs, each from a forward whose sums packing rounds another way.
            assert out.logps.tolist() == pytest.approx(expected, abs=reorder_tol(LOGPROB, 12 * TINY_TERMS))
            assert batch.lengths.tolist() == [len(c) for c in completions]
            assert out.token_logps.shape == (sum(len(c) for c in completions),)
    assert packing_isolates(module, groups, tok.pad_token_id, 64, "cpu")
    # The ranking of 3 made 3 pairs, the comparison 1; pairs index the flat vector.
    pairs = padded.layout.pairs
    assert list(zip(pairs.better.tolist(), pairs.worse.tolist())) == [(0, 1), (2, 3), (2, 4), (3, 4)]


@pytest.mark.slow
def test_dpo_learns_planted_preferences_and_the_reference_modes_agree(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", planted_pairs(64))
    result = run_dpo(config(tmp_path, data, "cache", eval__fraction=0.25))
    summary = result.summary
    first, last = summary["eval"][0], summary["eval"][-1]
    assert first["accuracy"] == 0.5 and first["margin"] == 0.0  # policy = reference at the start
    assert first["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert last["accuracy"] > 0.9 and last["margin"] > 1.0 and last["loss"] < 0.3
    assert summary["train_loss"][-1] < summary["train_loss"][0]
    assert summary["reference_logps"] == "cache" and summary["packed"]
    assert summary["data"]["pairs"] == 48 and summary["data"]["eval_pairs"] == 16
    # The saved policy prefers "yes" over "no" more than the start did: measured with plain transformers.
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "cache" / "policy")
    start, tok = build_tiny_model(0)
    prompt = tok("Say something about cat. sun tree")["input_ids"]
    yes, no = (tok(" " + w, add_special_tokens=False)["input_ids"] for w in ("yes", "no"))

    def gap(m) -> float:
        return sum(completion_logprobs(m, [prompt], [yes])[0]) - sum(
            completion_logprobs(m, [prompt], [no])[0]
        )

    assert gap(policy) > gap(start) + 1.0
    # The reference computed live on every micro-batch gives the same run as the cached one.
    live = run_dpo(config(tmp_path, data, "live", eval__fraction=0.25, reference_logps="live")).summary
    assert live["reference_logps"] == "live"
    # The reference log-probs come from other batches (cached) or these (live): the loss (~log 2)
    # sees each pair's 4 sequence sums of ~12 log-probs rounded another way, on every update.
    assert live["train_loss"] == pytest.approx(summary["train_loss"], abs=DPO_LIVE_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("loss_type,extra", [("ipo", {}), ("conservative", {"label_smoothing": 0.1})])
def test_ipo_and_conservative_dpo_learn(tmp_path, loss_type, extra):
    data = write_jsonl(tmp_path / "pairs.jsonl", planted_pairs(48))
    summary = run_dpo(config(tmp_path, data, loss_type=loss_type, eval__fraction=0.25, **extra)).summary
    assert summary["eval"][0]["accuracy"] == 0.5
    assert summary["eval"][-1]["accuracy"] > 0.9
    assert summary["train_loss"][-1] < summary["train_loss"][0]


@pytest.mark.slow
def test_lora_changes_only_the_adapted_weights_and_the_reference_is_the_base(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", planted_pairs(32))
    start, _ = build_tiny_model(0)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    result = run_dpo(
        config(tmp_path, data, peft__method="lora", peft__lora_rank=4, optimizer__lr=5e-3, max_steps=8)
    )
    assert result.summary["train_loss"][-1] < result.summary["train_loss"][0]
    after = result.model.state_dict()  # LoRA merged into the base on save
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed), sorted(changed)
    # Live reference under LoRA = the adapter switched off: the same losses as the cache.
    live = run_dpo(
        config(tmp_path, data, "live", peft__method="lora", peft__lora_rank=4, optimizer__lr=5e-3, max_steps=8,
               reference_logps="live")
    ).summary  # fmt: skip
    assert live["train_loss"] == pytest.approx(result.summary["train_loss"], abs=DPO_LIVE_TOL)


@pytest.mark.slow
def test_rankings_expand_to_pairs_and_a_separate_reference_loads(tmp_path):
    from helpers import planted_rankings

    data = write_jsonl(tmp_path / "rankings.jsonl", planted_rankings(24))
    summary = run_dpo(config(tmp_path, data, reference="builtin:tiny", max_steps=4)).summary
    assert summary["data"]["groups"] == 24 and summary["data"]["pairs"] > 24
    assert summary["train_pairs"] > 4 * 8  # more pairs than groups went through
    assert summary["reference"] == "builtin:tiny" and summary["reference_logps"] == "cache"


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="conservative"):
        config(tmp_path, tmp_path / "x.jsonl", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        config(tmp_path, tmp_path / "x.jsonl", loss_type="conservative")
    with pytest.raises(ConfigError, match="adapter"):
        config(tmp_path, tmp_path / "x.jsonl", peft__method="lora", reference="other")
    with pytest.raises(ConfigError, match="prompt_tuning"):
        config(tmp_path, tmp_path / "x.jsonl", peft__method="prompt_tuning")
    with pytest.raises(ConfigError, match="beta"):
        config(tmp_path, tmp_path / "x.jsonl", beta=0)


@pytest.mark.slow
def test_cli_rejects_data_without_preferences(tmp_path):
    data = write_jsonl(tmp_path / "labels.jsonl", [{"prompt": "p", "completion": "c", "label": "good"}] * 3)
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("rlhf")), "dpo", "--set", f"data.path={data}",
         f"output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "dpo learns from comparisons or rankings" in proc.stderr and "Traceback" not in proc.stderr
    tied = write_jsonl(
        tmp_path / "tied.jsonl", [{"prompt": "p", "completions": ["a", "b"], "ranks": [0, 0]}] * 2
    )
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("rlhf")), "dpo", "--set", f"data.path={tied}",
         f"output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "tied.jsonl:1: field `ranks`: all 2 completions share rank 0" in proc.stderr


@pytest.mark.slow
def test_dpo_resumes_to_the_same_run(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", planted_pairs(32))
    full = run_dpo(config(tmp_path, data, "full", max_steps=6)).summary
    run_dpo(config(tmp_path, data, "part", max_steps=6, save_every=3))
    import shutil

    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-000006", ignore_errors=True)
    resumed = run_dpo(config(tmp_path, data, "part", max_steps=6), resume=True).summary
    assert resumed["resumed_from_step"] == 3 and resumed["resumed"]
    assert resumed["train_pairs"] == full["train_pairs"]  # the whole run's, not the part after the resume
    # The same operations in the same order (restored weights, optimizer, RNG, data position): only
    # float32 rounding of the ~0.7 losses in the log could differ.
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=reorder_tol(0.7, 1))


@pytest.mark.slow
def test_two_process_dpo_matches_one_process_with_the_same_global_batch(tmp_path):
    from helpers import dist_env, planted_rankings

    data = write_jsonl(tmp_path / "rankings.jsonl", planted_rankings(40))
    args = [
        f"data.path={data}", "data.max_length=64", "prompt.template=raw", "optimizer.lr=3e-3",
        "optimizer.warmup_ratio=0", "max_steps=5", "eval.fraction=0.25", "eval.batch_size=2", "beta=0.5",
        "logging.log_every=1", "logging.progress=false", "logging.tensorboard=false",
    ]  # fmt: skip
    env = dist_env()
    two = subprocess.run(
        [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2", "-m",
         "rlhf.cli.main", "dpo", "--set", *args, "batch_size=2", f"output_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run(
        [str(Path(sys.executable).with_name("rlhf")), "dpo", "--set", *args, "batch_size=4",
         f"output_dir={tmp_path / 'one'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-4000:]
    one_sum, two_sum = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("one", "two"))
    assert two_sum["data"] == one_sum["data"] and two_sum["train_pairs"] == one_sum["train_pairs"]
    # Pair losses and margins (~1) averaged over a step's 4 groups of up to 6 pairs or the held-out
    # pairs (34), in another order, each from log-prob sums of batches of another shape, after 5 updates.
    tol = reorder_tol(1.0, 34, updates=5)
    assert two_sum["train_loss"] == pytest.approx(one_sum["train_loss"], abs=tol)
    for mine, theirs in zip(two_sum["eval"], one_sum["eval"]):
        assert mine["pairs"] == theirs["pairs"]
        for key in ("loss", "accuracy", "margin"):
            assert mine[key] == pytest.approx(theirs[key], abs=tol), key
    assert one_sum["train_loss"][-1] < one_sum["train_loss"][0]


@pytest.mark.slow
def test_qlora_adapters_learn_after_the_no_gradient_passes(tmp_path):
    """The packing check, the reference pass and the step-0 evaluation run the 4-bit layers without
    gradients first; the adapters must still get gradients afterwards (see `keep_4bit_trainable`)."""
    data = write_jsonl(tmp_path / "pairs.jsonl", planted_pairs(32))
    summary = run_dpo(
        config(tmp_path, data, peft__method="qlora", peft__lora_rank=4, optimizer__lr=1e-2, max_steps=6,
               eval__fraction=0.25)
    ).summary  # fmt: skip
    from rlhf.tracking import read_metrics

    norms = [row["train/grad_norm"] for row in read_metrics(tmp_path / "run") if "train/grad_norm" in row]
    assert norms and all(n > 0 for n in norms)
    assert summary["eval"][-1]["accuracy"] > summary["eval"][0]["accuracy"]
    assert summary["train_loss"][-1] < summary["train_loss"][0]
    assert (tmp_path / "run" / "policy" / "adapter_model.safetensors").is_file()  # QLoRA saves the adapter
