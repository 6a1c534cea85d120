"""Reward data: records -> groups -> one flat batch whose pairs index the right rows."""

from __future__ import annotations

import pytest
import torch

from rlhf.config.core import ConfigError
from rlhf.config.parts import PromptConfig
from rlhf.data import Comparison, DataError, Label, PromptRenderer, Ranking, Rating, Source
from rlhf.models import build_tiny_tokenizer
from rlhf.reward.data import build_groups, collate_groups, label_targets, loss_mode, resolve_loss

SRC = Source("data.jsonl", 3)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def groups_of(records, loss, tok, **kw):
    renderer = PromptRenderer(PromptConfig(template="raw"), tok)
    return build_groups(records, loss, renderer, tok, max_length=64, **kw)[0]


def test_ranking_each_completion_once_pairs_index_rows(tok):
    records = [
        Ranking("Q1", ["a", "bb bb", "c c c"], [1, 0, 2], SRC),
        Comparison("Q2", "yes please", "no", SRC, margin=0.5),
    ]
    groups = groups_of(records, "pairwise", tok)
    batch = collate_groups(groups, tok.pad_token_id, mode="pairwise")
    assert batch.input_ids.shape[0] == 5  # 3 + 2 completions, each once
    assert batch.layout.offsets == [0, 3]
    rows = [groups[0].input_ids[i] for i in range(3)] + groups[1].input_ids
    for r, seq in enumerate(rows):
        assert batch.input_ids[r, : len(seq)].tolist() == seq
        assert batch.attention_mask[r].sum() == len(seq)
    assert batch.input_ids.shape[1] == max(len(s) for s in rows)  # padded to the batch max only
    pairs = batch.layout.pairs
    got = sorted(zip(pairs.better.tolist(), pairs.worse.tolist()))
    assert got == sorted([(1, 0), (1, 2), (0, 2), (3, 4)])
    assert pairs.margin.tolist() == pytest.approx([0, 0, 0, 0.5])
    assert batch.count == 2
    assert pairs.weight.sum().item() == pytest.approx(batch.count)


def test_ties_skip_and_half_and_count(tok):
    records = [Ranking("Q", ["a", "b"], [1, 1], SRC), Ranking("R", ["a", "b", "c"], [0, 0, 1], SRC)]
    groups = groups_of(records, "pairwise", tok)
    skip = collate_groups(groups, tok.pad_token_id, ties="skip")
    assert len(skip.layout.pairs) == 2 and skip.count == 1  # the all-tied group counts nothing
    half = collate_groups(groups, tok.pad_token_id, ties="half")
    assert len(half.layout.pairs) == 4 and half.count == 2
    assert collate_groups(groups, tok.pad_token_id, mode="plackett_luce").count == 1


def test_rating_pairs_group_by_prompt_and_regression(tok):
    records = [Rating("Q", "a", 1, SRC), Rating("P", "x", 3, SRC), Rating("Q", "b", 5, SRC)]
    groups = groups_of(records, "rating_pairs", tok, rating_scale=(1, 5))
    assert [len(g.input_ids) for g in groups] == [2, 1]
    batch = collate_groups(groups, tok.pad_token_id, mode=loss_mode("rating_pairs"))
    assert (batch.layout.pairs.better.tolist(), batch.layout.pairs.worse.tolist()) == ([1], [0])
    assert batch.layout.pairs.margin.tolist() == pytest.approx([1.0])
    assert batch.count == 1
    groups = groups_of(records, "regression", tok, rating_scale=(1, 5))
    batch = collate_groups(groups, tok.pad_token_id, mode="regression")
    assert batch.layout.targets.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert batch.count == 3 and batch.layout.pairs is None


def test_labels_map_and_error(tok):
    records = [Label("Q", "a", "Good", SRC), Label("Q", "b", "HARMFUL", SRC), Label("Q", "c", "1", SRC)]
    groups = groups_of(records, "label", tok)
    batch = collate_groups(groups, tok.pad_token_id, mode="label")
    assert batch.layout.targets.tolist() == [1.0, 0.0, 1.0] and batch.count == 3
    with pytest.raises(DataError, match=r"data\.jsonl:3.*`label`.*'meh'.*positive: .*good"):
        groups_of([Label("Q", "a", "meh", SRC)], "label", tok)
    custom = label_targets(["meh"], ["ugh"])
    assert groups_of([Label("Q", "a", "MEH", SRC)], "label", tok, labels=custom)[0].targets == [1.0]
    with pytest.raises(ConfigError):
        label_targets(["a"], None)


def test_resolve_loss():
    assert resolve_loss("auto", "ranking") == "pairwise"
    assert resolve_loss("auto", "rating") == "regression"
    assert resolve_loss("auto", "label") == "label"
    with pytest.raises(ConfigError, match="label.*comparison"):
        resolve_loss("label", "comparison")


def test_batch_tensors_are_long(tok):
    groups = groups_of([Comparison("Q", "a", "b", SRC)], "pairwise", tok)
    batch = collate_groups(groups, tok.pad_token_id)
    assert batch.input_ids.dtype == torch.long and batch.layout.pairs.margin is None
