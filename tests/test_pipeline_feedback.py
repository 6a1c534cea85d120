"""The feedback stage: simulated Bradley-Terry labelers, the held-out split, files of people's preferences."""

import json
import math

import pytest

from rlhf.data.errors import DataError
from rlhf.demo.task import gold, gold_score, make_split
from rlhf.pipeline.feedback import read_jsonl, simulate, split_file


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def by_length(prompts, completions):
    """Gold for the tests: longer is better (one point per character)."""
    return [float(len(c)) for c in completions]


def candidates(tmp_path, n_prompts=40):
    rows = [{"prompt": f"p{i}", "completions": ["a", "bb", "ccc", "bb", ""]} for i in range(n_prompts)]
    return write_jsonl(tmp_path / "candidates.jsonl", rows)


def test_sure_labelers_agree_and_pairs_are_counted(tmp_path):
    stats = simulate(candidates(tmp_path), by_length, tmp_path / "fb", labelers=3, temperature=1e-3, seed=1)
    # 5 candidates: 10 pairs per prompt; 4 with the empty one, 1 of identical "bb" -> 5 judged.
    assert stats["pairs"] == 40 * 5
    assert stats["dropped"] == {"empty": 40 * 4, "identical": 40}
    assert stats["raw_agreement"] == 1.0
    assert stats["labeler_gold_accuracy"] == 1.0 and stats["majority_gold_agreement"] == 1.0
    train = read_jsonl(tmp_path / "fb" / "pairs.jsonl")
    held = read_jsonl(tmp_path / "fb" / "heldout.jsonl")
    assert all(len(r["chosen"]) > len(r["rejected"]) for r in train + held)
    # The split is by prompt: 15% of 40 prompts held out, none of them in training.
    held_prompts = {r["prompt"] for r in held}
    assert len(held_prompts) == stats["heldout_prompts"] == 6
    assert not held_prompts & {r["prompt"] for r in train}
    assert len(train) + len(held) == 200
    assert read_jsonl(tmp_path / "fb" / "heldout_gold.jsonl") == held


def test_labelers_follow_bradley_terry(tmp_path):
    # Two candidates whose gold differs by exactly 1: one labeler picks the better with sigmoid(1).
    rows = [{"prompt": f"p{i}", "completions": ["x", "xy"]} for i in range(4000)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    stats = simulate(path, by_length, tmp_path / "fb", labelers=1, temperature=1.0, seed=0)
    expected = 1 / (1 + math.exp(-1))  # 0.731
    assert abs(stats["labeler_gold_accuracy"] - expected) < 0.025
    assert stats["raw_agreement"] is None  # one labeler: nothing to agree with
    # Two labelers agree with probability p^2 + (1-p)^2.
    stats = simulate(path, by_length, tmp_path / "fb2", labelers=2, temperature=1.0, seed=0)
    assert abs(stats["raw_agreement"] - (expected**2 + (1 - expected) ** 2)) < 0.025


def test_even_splits_are_left_out_and_all_keeps_every_judgment(tmp_path):
    rows = [{"prompt": f"p{i}", "completions": ["x", "xy"]} for i in range(200)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    stats = simulate(path, by_length, tmp_path / "m", labelers=2, temperature=1.0, seed=3)
    kept = stats["train_rows"] + stats["heldout_rows"]
    assert kept + stats["dropped"]["split"] == 200 and stats["dropped"]["split"] > 0
    stats = simulate(path, by_length, tmp_path / "a", labelers=2, resolve="all", temperature=1.0, seed=3)
    rows = read_jsonl(tmp_path / "a" / "pairs.jsonl") + read_jsonl(tmp_path / "a" / "heldout.jsonl")
    assert len(rows) == 400 and {r["weight"] for r in rows} == {0.5}


def test_bad_candidates_name_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"prompt": "p", "completions": ["a", "b"]}\n{"prompt": "q", "completions": "ab"}\n')
    with pytest.raises(DataError, match=r"c.jsonl:2: field `completions`"):
        simulate(path, by_length, tmp_path / "fb")
    path.write_text('{"prompt": "p", "completions": ["a", "b"]}\nnot json\n')
    with pytest.raises(DataError, match=r"c.jsonl:2: not valid JSON"):
        simulate(path, by_length, tmp_path / "fb")


def test_a_preference_file_is_split_by_prompt_and_kept_as_is(tmp_path):
    rows = [
        {"prompt": f"p{i % 10}", "chosen": f"good {i}", "rejected": f"bad {i}", "weight": 0.5}
        for i in range(30)
    ]
    stats = split_file(
        write_jsonl(tmp_path / "export.jsonl", rows), tmp_path / "fb", heldout_fraction=0.2, seed=0
    )
    train = read_jsonl(tmp_path / "fb" / "pairs.jsonl")
    held = read_jsonl(tmp_path / "fb" / "heldout.jsonl")
    assert stats["heldout_prompts"] == 2 and len(held) == 6 and len(train) == 24
    assert sorted(train + held, key=lambda r: r["chosen"]) == sorted(rows, key=lambda r: r["chosen"])
    write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "chosen": "x", "rejected": "y"}, {"chosen": "x"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: field `prompt`"):
        split_file(tmp_path / "bad.jsonl", tmp_path / "fb2", heldout_fraction=0.5, seed=0)


def test_demo_gold_rule_by_hand():
    doc = "Summarize: The bus was late again today. Mia is a baker in Oslo. She has a green cat."
    assert gold_score([doc], ["Mia is a baker in Oslo with a green cat."]) == [5.0]
    assert gold(doc, "Mia is a baker.") == 2.0  # two facts
    assert gold(doc, "Tom is a baker in Oslo with a green cat.") == 4 - 2.0  # Tom is invented
    # The whole document: 5 facts, 17 words (5 past 12) -> 5 - 0.2 * 5.
    assert gold(doc, doc.removeprefix("Summarize: ")) == pytest.approx(5 - 0.2 * 5)
    # A rendered prompt (instruction template) scores the same as the plain one.
    assert gold_score([f"### Instruction:\n{doc}\n\n### Response:\n"], ["Mia"]) == [1.0]


def test_demo_demonstrations_are_of_mixed_quality():
    rows = make_split(400, seed=0)
    scores = {style: [] for style in ("good", "partial", "verbose", "wrong")}
    for r in rows:
        scores[r["style"]].append(gold_score([r["prompt"]], [r["completion"]])[0])
    assert set(scores["good"]) == {5.0}
    assert max(scores["partial"]) <= 3.0 and max(scores["wrong"]) <= 2.0 and max(scores["verbose"]) < 5.0
    assert 0.15 < len(scores["good"]) / len(rows) < 0.35


def test_a_label_budget_picks_the_training_pairs_the_reward_model_is_least_sure_of(tmp_path):
    """`selection`: only the budget's pairs of the training prompts are labeled (held-out prompts'
    pairs all are: they measure); `uncertainty` by a hand-built reward takes the closest pairs."""
    from rlhf.pipeline.feedback import Selection

    rows = [{"prompt": f"p{i}", "completions": ["a", "ab", "abcdefgh", "abcdefghi"]} for i in range(20)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    # A reward that only sees length, scaled down: near pairs (1 character apart) are the unsure ones.
    sources = [lambda prompts, completions: type("Out", (), {"rewards": [len(c) / 4 for c in completions]})()]
    stats = simulate(path, by_length, tmp_path / "fb", labelers=1, temperature=1e-3, seed=2,
                     selection=Selection("uncertainty", budget=10, per_prompt=1, sources=sources))  # fmt: skip
    train = read_jsonl(tmp_path / "fb" / "pairs.jsonl")
    held = read_jsonl(tmp_path / "fb" / "heldout.jsonl")
    assert len(train) == 10 and len({r["prompt"] for r in train}) == 10  # one a prompt, 10 prompts
    assert all(abs(len(r["chosen"]) - len(r["rejected"])) == 1 for r in train)  # (a, ab) or (..h, ..hi)
    assert len(held) == 6 * stats["heldout_prompts"]  # every pair of 4 candidates
    assert stats["selection"]["rule"] == "uncertainty" and stats["selection"]["pairs"] == 10
    # |sigmoid(±1/4) - 1/2| for every chosen pair: the mean of ten equal float64 values.
    assert stats["selection"]["mean_distance_from_even"] == pytest.approx(
        1 / (1 + math.exp(-0.25)) - 0.5, abs=1e-15
    )
    random_pick = simulate(path, by_length, tmp_path / "fb2", labelers=1, temperature=1e-3, seed=2,
                           selection=Selection("random", budget=10))  # fmt: skip
    assert random_pick["train_rows"] == 10 and random_pick["selection"]["mean_distance_from_even"] is None


def test_the_selection_config_is_checked_and_loads_its_reward_sources(tmp_path):
    from rlhf.config.core import ConfigError
    from rlhf.pipeline.config import FeedbackConfig
    from rlhf.pipeline.runners import _selection

    with pytest.raises(ConfigError, match=r"`feedback.select: random` needs a positive `feedback.budget`"):
        FeedbackConfig(select="random")
    from rlhf.pipeline.config import PipelineConfig

    one = FeedbackConfig(select="disagreement", budget=5, select_with=["examples/rewards.py:letter_e"])
    with pytest.raises(
        ConfigError, match=r"needs 2 or more reward models: give them in `feedback.select_with`"
    ):
        PipelineConfig(feedback=one, gold="examples/rewards.py:letter_e")
    assert PipelineConfig(feedback=one, rounds=2, gold="examples/rewards.py:letter_e").rounds == 2
    alone = FeedbackConfig(select="disagreement", budget=5)
    with pytest.raises(ConfigError, match=r"\(`reward_ensemble: 3` trains three\)"):
        PipelineConfig(feedback=alone, rounds=2, gold="examples/rewards.py:letter_e")
    assert PipelineConfig(feedback=alone, rounds=2, reward_ensemble=2, gold="x.py:f").reward_ensemble == 2
    assert _selection(FeedbackConfig()) is None
    chosen = _selection(
        FeedbackConfig(select="uncertainty", budget=5, select_with=["examples/rewards.py:letter_e"])
    )
    assert chosen is not None and (chosen.rule, chosen.budget) == ("uncertainty", 5)
    assert chosen.sources[0](["p"], ["eee"]).rewards == [10.0]
