"""Reward data: records -> groups -> one flat batch whose pairs index the right rows."""

from __future__ import annotations

import pytest
import torch

from rlhf.config.core import ConfigError
from rlhf.config.parts import PromptConfig
from rlhf.data import Comparison, DataError, Label, PromptRenderer, Ranking, Rating, Source
from rlhf.models import build_tiny_tokenizer
from rlhf.preference.groups import Group, build_groups, label_targets, loss_mode, resolve_loss
from rlhf.reward.data import collate_groups

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


def test_pack_sequences_best_fit_layout():
    from rlhf.data.rows import pack_sequences

    # Lengths 3, 2, 1 into rows of 4: the 3 opens row 0, the 2 opens row 1, the 1 fills row 0.
    ids, positions, (rows, cols) = pack_sequences([[1, 2, 3], [4, 5], [6]], pad_id=0, width=4)
    assert ids.tolist() == [[1, 2, 3, 6], [4, 5, 0, 0]]
    assert positions.tolist() == [[0, 1, 2, 0], [0, 1, 0, 1]]  # restart per sequence and for the tail
    assert rows.tolist() == [0, 1, 0] and cols.tolist() == [2, 1, 3]  # each sequence's last token
    batch = collate_groups([Group("p", [[1, 2, 3], [4, 5]], [0.0, 1.0]), Group("q", [[6], [7]], [0.0, 1.0])],
                           0, pack_width=4)  # fmt: skip
    assert batch.attention_mask is None and set(batch.inputs()) == {"input_ids", "position_ids", "last_index"}
    assert batch.input_ids.tolist() == [[1, 2, 3, 6], [4, 5, 7, 0]]
    assert batch.layout.pairs.better.tolist() == [0, 2] and batch.count == 2


class _Leaky(torch.nn.Module):
    """A scalar model whose attention ignores position restarts: packed sequences see each other."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, *, position_ids=None, last_index=None):
        if position_ids is not None:
            position_ids = torch.arange(input_ids.shape[1]).expand_as(input_ids)
            out = self.inner._values(input_ids, torch.ones_like(input_ids), position_ids)
            return type("Out", (), {"last": out[last_index[0], last_index[1]]})
        return self.inner(input_ids, attention_mask)


@pytest.mark.parametrize("which", ["tiny", "tinystories"])
def test_packed_rewards_equal_padded_and_leaks_are_caught(which, request):
    from rlhf.config.parts import ModelConfig
    from rlhf.models import load_tokenizer
    from rlhf.models.scalar import load_scalar_model
    from rlhf.reward.train import packing_isolates

    cfg = (
        ModelConfig()
        if which == "tiny"
        else ModelConfig(path=str(request.getfixturevalue("tinystories_path")))
    )
    tok = load_tokenizer(cfg)
    model = load_scalar_model(cfg, for_training=False, tokenizer=tok)
    texts = [
        "the cat sat on the mat please",
        "no",
        "a big dog runs in the park all day",
        "hello there",
        "x y",
    ]
    groups = [Group("", [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts[i : i + 2]], [0.0, 1.0])
              for i in (0, 2)] + [Group("", [tok(texts[4])["input_ids"], tok(texts[0])["input_ids"]], [1.0, 0.0])]  # fmt: skip
    with torch.no_grad():
        padded = model(**collate_groups(groups, tok.pad_token_id).inputs()).last
        batch = collate_groups(groups, tok.pad_token_id, pack_width=64)
        packed = model(**batch.inputs()).last
    assert batch.input_ids.shape[0] < 6  # several completions share a row
    assert torch.allclose(packed, padded, atol=1e-5), (packed, padded)
    assert packing_isolates(model, groups, tok.pad_token_id, 64, "cpu")
    assert not packing_isolates(_Leaky(model), groups, tok.pad_token_id, 64, "cpu")


def test_row_weights_scale_pairs_and_the_batch_share(tok):
    """A row's `weight` (labeling exports that keep every judgment) scales its pairs; the batch's
    share of the step is Σ weights, so a weight-w row counts w rows; Plackett-Luce refuses them."""
    records = [
        Ranking("Q1", ["a", "bb bb", "c c c"], [1, 0, 2], SRC, weight=0.5),
        Comparison("Q2", "yes please", "no", SRC, weight=2.0),
        Comparison("Q3", "fine", "bad", SRC),
    ]
    batch = collate_groups(groups_of(records, "pairwise", tok), tok.pad_token_id, mode="pairwise")
    weights = batch.layout.pairs.weight.tolist()
    assert weights == pytest.approx([0.5 / 3] * 3 + [2.0, 1.0])
    assert batch.layout.count == 3 and batch.layout.weight_sum == pytest.approx(3.5)
    plain = collate_groups(groups_of(records[2:], "pairwise", tok), tok.pad_token_id, mode="pairwise")
    assert plain.layout.weight_sum == plain.layout.count == 1
    with pytest.raises(ConfigError, match="weight"):
        collate_groups(groups_of(records[:1], "plackett_luce", tok), tok.pad_token_id, mode="plackett_luce")


def test_row_weight_is_read_and_checked(tmp_path):
    from rlhf.data import load_records

    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "Q", "chosen": "a", "rejected": "b", "weight": 0.25}\n')
    assert load_records(str(path)).records[0].weight == 0.25
    path.write_text(
        '{"prompt": "Q", "chosen": "a", "rejected": "b"}\n{"prompt": "Q", "chosen": "a", "rejected": "b", "weight": 0}\n'
    )
    with pytest.raises(DataError, match=r"pairs.jsonl:2.*`weight`.*positive"):
        load_records(str(path))
