"""`rlhf rrhf`: the loss worked out by hand, a run that learns what people ranked first, LoRA,
responses sampled and scored by a reward model, config errors, and 2 processes = 1 process."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import WORDS, write_jsonl
from rlhf.config.core import ConfigError, load_config
from rlhf.rrhf import RrhfConfig
from tolerance import LOGPROB, reorder_tol

QUIET = ["logging.progress=false", "logging.tensorboard=false", "logging.log_every=1"]


def rrhf_config(tmp_path, *overrides: str) -> RrhfConfig:
    return load_config(
        RrhfConfig, None,
        ["prompt.template=raw", "data.max_length=64", "optimizer.warmup_ratio=0", *QUIET,
         f"output_dir={tmp_path / 'run'}", *overrides],
    )  # fmt: skip


# ----------------------------------------------------------------------------- the loss by hand

HAND_ROWS = [
    {"prompt": "Say the cat.", "completions": ["the cat", "a dog runs", "sun"], "ranks": [1, 3, 2]},
    {"prompt": "Name a tree.", "completions": ["an oak tree", "blue"], "ranks": [1, 2], "weight": 0.5},
    {"prompt": "Count.", "completions": ["one two", "two", "three", "one"], "ranks": [2, 1, 3, 3]},  # a tie
]


def hand_terms(model_dir: Path, rows: list[dict], sft_weight: float) -> dict[str, float]:
    """L = Σ_g w_g [Σ_{s_i<s_j} max(0, p_i - p_j) + sft_weight · NLL(best_g)] / groups (and its two
    terms), from one plain
    forward of each prompt + response + EOS (the raw template: the prompt text is the prompt)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, rank_total, sft_total = 0.0, 0.0, 0.0
    for row in rows:
        scores = [-r for r in row["ranks"]]
        weight = row.get("weight", 1.0)
        prompt_ids = tokenizer(row["prompt"])["input_ids"]  # BOS + prompt
        p, nll = [], []
        for text in row["completions"]:
            completion = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids = torch.tensor([prompt_ids + completion])
            with torch.no_grad():
                logits = model(ids).logits[
                    0, len(prompt_ids) - 1 : -1
                ]  # the positions predicting the response
            nll.append(torch.nn.functional.cross_entropy(logits, torch.tensor(completion)).item())
            p.append(-nll[-1])  # the mean token log-prob
        n = len(p)
        hinge = sum(max(0.0, p[i] - p[j]) for i in range(n) for j in range(n) if scores[i] < scores[j])
        best = scores.index(max(scores))
        rank_total += weight * hinge
        sft_total += weight * nll[best]
        total += weight * (hinge + sft_weight * nll[best])
    return {"loss": total / len(rows), "rank_loss": rank_total / len(rows), "sft_loss": sft_total / len(rows)}


@pytest.mark.slow
def test_loss_is_the_ranking_hinge_plus_sft_on_the_best_response(tmp_path):
    """The first step's loss (before any update) of a run whose one micro-batch holds every group,
    packed, equals the hand computation; so does the padded layout through `rrhf_loss`."""
    from rlhf.data import PromptRenderer
    from rlhf.models import load_lm, load_tokenizer
    from rlhf.models.tiny import save_tiny
    from rlhf.preference.sequences import SequenceLogps
    from rlhf.rrhf.data import encode_groups, load_split
    from rlhf.rrhf.train import collate, rrhf_loss, run_rrhf

    model_dir = save_tiny(tmp_path / "tiny", seed=3)
    data = write_jsonl(tmp_path / "ranked.jsonl", HAND_ROWS)
    expected = hand_terms(model_dir, HAND_ROWS, sft_weight=0.5)
    assert expected["rank_loss"] > 0.01  # the hinge is active: the check covers it
    cfg = rrhf_config(
        tmp_path, f"model.path={model_dir}", f"data.path={data}", "batch_size=3", "max_steps=1",
        "sft_weight=0.5", "optimizer.lr=1e-2",
    )  # fmt: skip
    summary = run_rrhf(cfg).summary
    assert summary["packed"] is True and summary["data"]["pairs"] == 3 + 1 + 5
    assert summary["train_loss"][0] == pytest.approx(expected["loss"], abs=1e-5)
    assert summary["train_rank_loss"][0] == pytest.approx(expected["rank_loss"], abs=1e-5)
    assert summary["train_sft_loss"][0] == pytest.approx(expected["sft_loss"], abs=1e-5)

    tokenizer = load_tokenizer(cfg.model)
    groups, _ = encode_groups(load_split(cfg, PromptRenderer(cfg.prompt, tokenizer))[0], tokenizer, cfg)
    module = SequenceLogps(load_lm(cfg.model, tokenizer=tokenizer)).eval()
    loss, metrics = rrhf_loss(cfg, module, collate(groups, tokenizer.pad_token_id), num_items=3)
    assert loss.item() == pytest.approx(expected["loss"], abs=1e-5)
    assert metrics["sft_loss"] == pytest.approx(expected["sft_loss"], abs=1e-5)


def test_length_normalization_decides_which_response_the_hinge_sees_as_likelier(tmp_path):
    """Response 0 (1 token, log-prob -2) scored below response 1 (3 tokens, -6 in all): per token
    both are -2, a tie (no hinge, accuracy ½); summed, response 0 is 4 nats likelier (hinge 4,
    accuracy 0). The SFT term is the best response's mean token NLL either way: 6 / 3 = 2."""
    from rlhf.rrhf.train import rrhf_terms

    logps, lengths = torch.tensor([-2.0, -6.0]), torch.tensor([1.0, 3.0])
    scores, weights = torch.tensor([0.0, 1.0]), torch.tensor([1.0])
    for normalize, hinge, accuracy in ((True, 0.0, 0.5), (False, 4.0, 0.0)):
        cfg = rrhf_config(tmp_path, f"length_normalize={str(normalize).lower()}")
        loss, metrics = rrhf_terms(cfg, logps, lengths, scores, weights, [0])
        assert metrics["rank_loss"].item() == pytest.approx(hinge)
        assert metrics["sft_loss"].item() == pytest.approx(2.0)
        assert loss.item() == pytest.approx(hinge + 2.0)
        assert metrics["accuracy"].item() == pytest.approx(accuracy)


# ----------------------------------------------------------------------------- learning

E_WORDS = ["tree", "see", "free", "green", "here", "me", "bee", "keep", "sheep", "three"]
PLAIN_WORDS = ["cat", "dog", "sun", "run", "big", "small", "jump", "top", "cold", "fish"]
PROMPTS = [f"Say {a} {b}." for a, b in zip(WORDS[:8], WORDS[8:16])]


def e_share(text: str) -> float:
    """The gold reward (examples/rewards.py:letter_e): 10 x the share of characters that are `e`."""
    return 10.0 * sum(ch == "e" for ch in text) / max(1, len(text))


def planted_rankings(n: int, reverse: bool = False) -> list[dict]:
    """Four responses per prompt, mixes of e-rich and e-free words, ranked by `e_share` (best
    first), or worst first with `reverse`."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        texts = [
            " ".join(
                rng.choice(E_WORDS if rng.random() < k / 3 else PLAIN_WORDS) for _ in range(rng.randint(2, 4))
            )
            for k in range(4)
        ]
        order = sorted(range(4), key=lambda j: -e_share(texts[j]) if not reverse else e_share(texts[j]))
        ranks = [order.index(j) + 1 for j in range(4)]
        rows.append({"prompt": PROMPTS[i % len(PROMPTS)], "completions": texts, "ranks": ranks})
    return rows


def mean_gold_reward(path: str, seeds=(1,)) -> float:
    """Mean `e_share` of the policy's samples: 4 per prompt, for each seed."""
    from rlhf.config.parts import ModelConfig
    from rlhf.data import encode_prompt
    from rlhf.generation.config import SamplingConfig
    from rlhf.generation.sampling import generate_samples
    from rlhf.models import load_lm, load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(path=path))
    model = load_lm(ModelConfig(path=path), for_training=False, tokenizer=tokenizer).eval()
    prompt_ids = [encode_prompt(tokenizer, p) for p in PROMPTS]  # the raw template
    values = []
    for seed in seeds:
        sampling = SamplingConfig(max_new_tokens=8, seed=seed, batch_size=32)
        for group in generate_samples(
            model, tokenizer, prompt_ids, sampling, per_prompt=4, unique=True, progress=False
        ):
            values += [e_share(sample.text) for sample in group]
    return sum(values) / len(values)


@pytest.mark.slow
def test_rrhf_raises_the_reward_of_the_policys_samples(tmp_path):
    """People ranked the responses by their share of `e`s; after RRHF the policy's own samples score
    higher on that share than before, and higher than after training on the same responses with
    the ranks reversed (so the ranking, not the responses' words, moved it)."""
    from rlhf.rrhf.train import run_rrhf

    before = mean_gold_reward("builtin:tiny")
    after = {}
    for name, reverse in (("ranked", False), ("reversed", True)):
        data = write_jsonl(tmp_path / f"{name}.jsonl", planted_rankings(32, reverse))
        cfg = rrhf_config(
            tmp_path / name, f"data.path={data}", "max_steps=8", "batch_size=4", "optimizer.lr=8e-3"
        )
        summary = run_rrhf(cfg).summary
        assert summary["train_accuracy"][-1] > summary["train_accuracy"][0]
        after[name] = mean_gold_reward(str(tmp_path / name / "run" / "policy"))
    print(
        f"mean e-share reward: before {before:.3f}, after {after['ranked']:.3f}, reversed {after['reversed']:.3f}"
    )
    assert after["ranked"] > before + 0.5
    assert after["ranked"] > after["reversed"] + 0.5


# ----------------------------------------------------------------------------- LoRA


@pytest.mark.slow
def test_lora_changes_only_what_the_adapters_add(tmp_path):
    """With LoRA the saved (merged) policy differs from the base only in the adapted projections, by
    an update of rank <= lora_rank; every other tensor is the base's."""
    from safetensors.torch import load_file

    from rlhf.models.tiny import save_tiny
    from rlhf.rrhf.train import run_rrhf

    base_dir = save_tiny(tmp_path / "base", seed=0)
    data = write_jsonl(tmp_path / "ranked.jsonl", planted_rankings(8))
    cfg = rrhf_config(
        tmp_path, f"model.path={base_dir}", f"data.path={data}", "peft.method=lora", "peft.lora_rank=2",
        "peft.lora_dropout=0", "max_steps=3", "batch_size=4", "optimizer.lr=1e-2",
    )  # fmt: skip
    summary = run_rrhf(cfg).summary
    assert summary["trainable_parameters"] < 10_000
    base = load_file(base_dir / "model.safetensors")
    merged = load_file(tmp_path / "run" / "policy" / "model.safetensors")
    adapted = [name for name in base if not torch.equal(base[name], merged[name])]
    assert adapted and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in adapted), adapted
    assert len(adapted) == 4  # q and v of both layers
    for name in adapted:
        assert torch.linalg.matrix_rank(merged[name] - base[name], atol=1e-6) <= 2, name


@pytest.mark.slow
def test_qlora_adapters_learn_after_passes_without_gradients(tmp_path):
    """QLoRA keeps learning although the packing check and the step-0 evaluation ran the 4-bit base in
    eval mode without gradients first (on the CPU, bitsandbytes would otherwise switch to a kernel
    with no backward); the policy is saved as an adapter."""
    from safetensors.torch import load_file

    from rlhf.rrhf.train import run_rrhf

    data = write_jsonl(tmp_path / "ranked.jsonl", planted_rankings(10))
    cfg = rrhf_config(
        tmp_path, f"data.path={data}", "peft.method=qlora", "peft.lora_dropout=0", "max_steps=2",
        "batch_size=4", "optimizer.lr=2e-2", "eval.fraction=0.2",
    )  # fmt: skip
    summary = run_rrhf(cfg).summary
    first, last = summary["eval"][0], summary["eval"][-1]
    assert [first["step"], last["step"]] == [0, 2] and last["loss"] != pytest.approx(first["loss"], abs=1e-4)
    adapter = load_file(tmp_path / "run" / "policy" / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # they start at zero


# ----------------------------------------------------------------------------- reward model, samples


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory) -> Path:
    """A tiny reward model with random weights: a fixed function of the text, which is all scoring needs."""
    from rlhf.config.parts import ModelConfig
    from rlhf.models import load_tokenizer
    from rlhf.models.scalar import load_scalar_model, save_scalar_model

    directory = tmp_path_factory.mktemp("rrhf_rm") / "rm"
    cfg = ModelConfig(path="builtin:tiny")
    tokenizer = load_tokenizer(cfg)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = load_scalar_model(cfg, tokenizer=tokenizer, for_training=False)
    save_scalar_model(model, directory, tokenizer)
    return directory


@pytest.mark.slow
def test_candidates_and_policy_samples_scored_by_a_reward_model(tmp_path, tiny_rm):
    """Candidates (other models' answers) plus 2 samples of the starting policy per prompt, pooled over
    the rows of one prompt and all scored by the reward model; responses.jsonl shows them and reads
    back as rankings; a resumed run trains on the same responses and repeats the loss."""
    from rlhf.config.parts import ModelConfig
    from rlhf.data import encode_prompt, load_records
    from rlhf.generation.sampling import generate_samples
    from rlhf.models import load_lm, load_tokenizer
    from rlhf.rewards.scorer import RewardScorer
    from rlhf.rrhf.train import run_rrhf

    rows = [
        {"prompt": "Name a fruit.", "completions": ["An apple.", "A rock.", "Blue sky"]},
        {"prompt": "Say hello.", "completions": ["Hello!", "Go away."]},
        {"prompt": "Name a fruit.", "completions": ["A pear.", "An apple."]},  # pooled with the first
    ]
    data = write_jsonl(tmp_path / "candidates.jsonl", rows)
    args = [
        f"data.path={data}", f"reward.model={tiny_rm}", "samples_per_prompt=2", "sampling.max_new_tokens=5",
        "sampling.seed=7", "max_steps=2", "batch_size=1", "optimizer.lr=1e-2", "save_every=1",
    ]  # fmt: skip
    full = run_rrhf(rrhf_config(tmp_path, *args)).summary
    assert full["data"]["groups"] == 2 and full["data"]["responses"] == 4 + 2 + 2 * 2
    written = [json.loads(line) for line in (tmp_path / "run" / "responses.jsonl").read_text().splitlines()]
    fruit, hello = written
    assert fruit["completions"][:4] == ["An apple.", "A rock.", "Blue sky", "A pear."]
    assert hello["completions"][:2] == ["Hello!", "Go away."]
    assert (
        fruit["origins"] == ["data"] * 4 + ["sample"] * 2
        and hello["origins"] == ["data"] * 2 + ["sample"] * 2
    )

    # The samples are the starting policy's, drawn with `sampling`.
    tokenizer = load_tokenizer(ModelConfig())
    policy = load_lm(ModelConfig(), for_training=False, tokenizer=tokenizer).eval()
    prompt_ids = [encode_prompt(tokenizer, p) for p in ("Name a fruit.", "Say hello.")]
    cfg = rrhf_config(tmp_path, *args)
    drawn = generate_samples(
        policy, tokenizer, prompt_ids, cfg.sampling, per_prompt=2, unique=True, max_retries=3, progress=False
    )
    assert [fruit["completions"][4:], hello["completions"][2:]] == [[s.text for s in g] for g in drawn]
    # Every response is scored by the reward model; ranks follow the scores (1 = best).
    scorer = RewardScorer.load(tiny_rm, device="cpu")
    for row in written:
        expected = scorer.score([row["prompt"]] * len(row["completions"]), row["completions"])
        assert row["scores"] == pytest.approx(expected, abs=1e-5)
        assert row["ranks"][row["scores"].index(max(row["scores"]))] == 1
        assert row["scored_by"] == "reward" and row["split"] == "train"
    assert load_records(str(tmp_path / "run" / "responses.jsonl")).kind == "ranking"

    # Resuming from step 1 reads the responses back (no sampling) and repeats step 2's loss.
    from rlhf.training.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(tmp_path / "run")
    assert checkpoint.name == "step-000001"
    resumed = run_rrhf(cfg, resume=str(checkpoint)).summary
    assert (
        resumed["resumed_from_step"] == 1
        and resumed["responses_read_back"]
        and not full["responses_read_back"]
    )
    # The same operations in the same order after the restore: equal up to rounding of the log.
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=reorder_tol(1.0, 1))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["batch_size=0"], "`batch_size` must be at least 1"),
        (["sft_weight=-1"], "`sft_weight` must be >= 0"),
        (["sft_weight=0", "rank_weight=0"], "both 0"),
        (["peft.method=prompt_tuning"], "`peft.method: prompt_tuning` is not supported"),
        (["samples_per_prompt=2"], "set `reward` (e.g. `reward.model`) to score them"),
        (["samples_per_prompt=-1"], "`samples_per_prompt` must be >= 0"),
        (
            ["reward.model=rm", "sampling.num_samples=2"],
            "`sampling.num_samples` was renamed `samples_per_prompt`",
        ),
        (["reward_model=rm"], "`reward_model` was renamed `reward.model`"),
        (["reward.model=rm", "samples_per_prompt=3", "sampling.temperature=0"], "sampling.temperature"),
        (["reward.model=rm", "include_data_responses=false", "samples_per_prompt=1"], "2 or more"),
        (["eval.fraction=1.5"], "`eval.fraction` must be in [0, 1)"),
        (["max_steps=0"], "`max_steps` must be at least 1"),
    ],
)
def test_config_errors_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        rrhf_config(tmp_path, *overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "Hi.", "completions": ["a", "b"]}, "candidates carry no ranks: set `reward`"),
        ({"prompt": "Hi."}, "rrhf needs ranked responses"),
        ({"prompt": "Hi.", "completion": "a", "label": "good"}, "holds label data; rrhf needs ranked"),
    ],
)
def test_data_without_ranks_fails_before_training(tmp_path, row, message):
    from rlhf.rrhf.train import run_rrhf

    data = write_jsonl(tmp_path / "data.jsonl", [row])
    with pytest.raises(ConfigError) as err:
        run_rrhf(rrhf_config(tmp_path, f"data.path={data}"))
    assert message in str(err.value)


# ----------------------------------------------------------------------------- two processes


@pytest.mark.slow
def test_two_processes_with_batch_2_equal_one_with_batch_4(tmp_path):
    """torchrun x2 (gloo, CPU) with 2 groups per process = 1 process with 4: the same loss, terms,
    accuracy and held-out metrics at every step, with groups of 2 to 4 responses and row weights
    (the loss is normalized over the step's groups, not per micro-batch)."""
    from helpers import dist_env
    from helpers import planted_rankings as varied_rankings

    rows = [{**row, "weight": (1.0, 0.5, 2.0)[i % 3]} for i, row in enumerate(varied_rankings(24))]
    data = write_jsonl(tmp_path / "rankings.jsonl", rows)
    args = [
        f"data.path={data}", "data.max_length=64", "prompt.template=raw", "optimizer.lr=3e-3",
        "optimizer.warmup_ratio=0", "max_steps=3", "eval.fraction=0.25", "eval.batch_size=2", *QUIET,
    ]  # fmt: skip
    bin_dir = Path(sys.executable).parent
    two = subprocess.run(
        [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "rlhf.cli.main", "rrhf",
         "--set", *args, "batch_size=2", f"output_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=dist_env(), timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run(
        [str(bin_dir / "rlhf"), "rrhf", "--set", *args, "batch_size=4", f"output_dir={tmp_path / 'one'}"],
        capture_output=True, text=True, env=dist_env(), timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-4000:]
    a, b = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert (
        b["data"] == a["data"] and a["data"]["groups"] == 18 and b["train_groups"] == a["train_groups"] == 12
    )
    # Length-normalized log-probs (~6) and NLLs averaged over a step's 4 groups of up to 4 responses
    # of up to 12 tokens, summed in another order from batches of another shape, after 3 updates.
    tol = reorder_tol(LOGPROB, 4 * 4 * 12, updates=3)
    for key in ("loss", "rank_loss", "sft_loss", "accuracy", "p_best", "p_worst"):
        assert b[f"train_{key}"] == pytest.approx(a[f"train_{key}"], abs=tol), key
    assert a["train_loss"][-1] < a["train_loss"][0]
    assert [e["step"] for e in b["eval"]] == [e["step"] for e in a["eval"]] == [0, 3]
    for mine, theirs in zip(b["eval"], a["eval"]):
        assert mine == pytest.approx(theirs, abs=tol)
    # Only the main process wrote the responses, once each.
    assert (tmp_path / "two" / "responses.jsonl").read_text() == (
        tmp_path / "one" / "responses.jsonl"
    ).read_text()
