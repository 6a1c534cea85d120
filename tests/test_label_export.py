"""Export formats and stats on hand-built judgments: majority and every-judgment resolution,
left-out reasons, Borda counts, provenance, and the files the reward / SFT loaders read."""

from __future__ import annotations

import pytest

from label_helpers import make_project
from rlhf.data import load_records
from rlhf.label.export import ExportError, export_rows, write_export
from rlhf.label.quality import project_stats
from rlhf.label.store import Store
from rlhf.label.tasks import ProjectConfig


def judge(store: Store, name: str, answers: dict[int, dict]) -> None:
    """`name` answers items by id; answers are given in ORIGINAL positions (display order undone)."""
    who = store.authenticate(store.add_annotator(name))
    pending = dict(answers)
    while pending:
        assignment = store.next_assignment(who.id)
        assert assignment is not None, f"{name} ran out of items before answering {sorted(pending)}"
        if assignment.item.id not in pending:
            store.skip(who.id, assignment.item.id)
            continue
        store.submit(
            who.id,
            assignment.item.id,
            to_display(pending.pop(assignment.item.id), assignment.order),
            seconds=3.0,
        )


def to_display(answer: dict, order: list[int]) -> dict:
    """An answer written in original indices, rewritten in the display positions of `order`."""
    pos = {original: p for p, original in enumerate(order)}
    out = {}
    for q, v in answer.items():
        if q == "pairwise":
            out[q] = {"A": "AB"[pos[0]], "B": "AB"[pos[1]]}.get(v, v)
        elif q == "ranking":
            out[q] = [pos[i] for i in v]
        elif q in ("rating", "label"):
            out[q] = [v[order[p]] for p in range(len(order))]
        elif q == "correction":
            out[q] = {"position": pos[v["index"]], "text": v["text"]}
        else:
            out[q] = v
    return out


@pytest.fixture
def pairwise(tmp_path):
    items = [
        ("Q1", ["good 1", "bad 1"]),
        ("Q2", ["good 2", "bad 2"]),
        ("Q3", ["x 3", "y 3"]),
        ("Q4", ["p", "q"]),
    ]
    store = make_project(tmp_path / "p", ["pairwise"], items, overlap=3)
    # item 1: A, A, B -> chosen 0 (2 of 3); item 2: B, B, tie -> chosen 1; item 3: A, B, tie -> no majority;
    # item 4: only two judgments (incomplete), both tie.
    judge(
        store,
        "ann",
        {1: {"pairwise": "A"}, 2: {"pairwise": "B"}, 3: {"pairwise": "A"}, 4: {"pairwise": "tie"}},
    )
    judge(
        store,
        "bob",
        {1: {"pairwise": "A"}, 2: {"pairwise": "B"}, 3: {"pairwise": "B"}, 4: {"pairwise": "tie"}},
    )
    judge(store, "cy", {1: {"pairwise": "B"}, 2: {"pairwise": "tie"}, 3: {"pairwise": "tie"}})
    return store


def test_pairs_by_majority_with_reasons_and_provenance(pairwise):
    rows, report = export_rows(pairwise, "pairs")
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("Q1", "good 1", "bad 1"),
        ("Q2", "bad 2", "good 2"),
    ]
    assert rows[0]["votes"] == {"completion 0": 2, "completion 1": 1}
    assert rows[0]["annotators"] == ["ann", "bob", "cy"] and rows[0]["task_source"] == "tasks.jsonl:1"
    assert all(t.endswith("Z") and t[:2] == "20" for t in rows[0]["submitted"])
    assert report.left_out == {"no majority": 1, "incomplete (fewer than 3 judgments)": 1}
    assert report.rows == 2 and report.used_items == 2 and report.items == 4
    rows, report = export_rows(pairwise, "pairs", include_incomplete=True)
    assert report.left_out == {"no majority": 1, "majority says tie": 1}


def test_pairs_every_judgment_weighted(pairwise):
    rows, report = export_rows(pairwise, "pairs", "all")
    # item 1: three decisive judgments of weight 1/3; item 2: two of 1/3 (the tie is left out);
    # item 3: one A and one B of 1/3 each (they cancel).
    got = [(r["item"], r["chosen"], round(r["weight"], 6), r["annotators"]) for r in rows]
    third = round(1 / 3, 6)
    assert got == [
        (1, "good 1", third, ["ann"]), (1, "good 1", third, ["bob"]), (1, "bad 1", third, ["cy"]),
        (2, "bad 2", third, ["ann"]), (2, "bad 2", third, ["bob"]),
        (3, "x 3", third, ["ann"]), (3, "y 3", third, ["bob"]),
    ]  # fmt: skip
    assert report.left_out == {"judgments saying tie": 2, "incomplete (fewer than 3 judgments)": 1}


def test_rankings_borda_and_every_ranking(tmp_path):
    store = make_project(tmp_path / "r", ["ranking"], [("Q", ["a", "b", "c"])], overlap=3)
    judge(store, "ann", {1: {"ranking": [0, 1, 2]}})
    judge(store, "bob", {1: {"ranking": [1, 0, 2]}})
    judge(store, "cy", {1: {"ranking": [0, 2, 1]}})
    rows, _ = export_rows(store, "rankings")
    # Mean places (1 = best): a (1+2+1)/3 = 4/3, b (2+1+3)/3 = 2, c (3+3+2)/3 = 8/3 -> ranks 1, 2, 3.
    assert rows[0]["ranks"] == [1, 2, 3]
    assert rows[0]["mean_place"] == pytest.approx([4 / 3, 2.0, 8 / 3])
    rows, _ = export_rows(store, "rankings", "all")
    assert [r["ranks"] for r in rows] == [[1, 2, 3], [2, 1, 3], [1, 3, 2]]
    assert all(r["weight"] == pytest.approx(1 / 3) for r in rows)
    pairs, _ = export_rows(store, "pairs")  # the Borda ranking as its 3 pairs, 1/3 each
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert sum(p["weight"] for p in pairs) == pytest.approx(1.0)
    sft, _ = export_rows(store, "sft")  # no corrections asked: the winner
    assert [r["completion"] for r in sft] == ["a"]


def test_ratings_labels_corrections_and_judgments(tmp_path):
    store = make_project(
        tmp_path / "m", ["rating", "label", "correction", "feedback"], [("Q", ["one", "two"])],
        overlap=2, scale=[1, 5], labels=["okay", "harmful"],
    )  # fmt: skip
    judge(
        store,
        "ann",
        {
            1: {
                "rating": [5, 1],
                "label": ["okay", "harmful"],
                "correction": {"index": 1, "text": "TWO"},
                "feedback": "meh",
            }
        },
    )
    judge(
        store,
        "bob",
        {
            1: {
                "rating": [4, 2],
                "label": ["okay", "okay"],
                "correction": {"index": 1, "text": "TWO"},
                "feedback": "ok",
            }
        },
    )
    ratings, _ = export_rows(store, "ratings")
    assert [(r["completion"], r["rating"], r["votes"]) for r in ratings] == [
        ("one", 4.5, [5, 4]),
        ("two", 1.5, [1, 2]),
    ]
    assert len(export_rows(store, "ratings", "all")[0]) == 4
    labels, report = export_rows(store, "labels")
    assert [(r["completion"], r["label"]) for r in labels] == [("one", "okay")]
    assert report.left_out == {"completions without a majority label": 1}
    sft, _ = export_rows(store, "sft")  # identical corrections are written once
    assert [(r["completion"], r["original"]) for r in sft] == [("TWO", "two")]
    raw, _ = export_rows(store, "judgments")
    assert [r["answer"]["feedback"] for r in raw] == ["meh", "ok"]
    with pytest.raises(ExportError, match="needs one of the questions pairwise, ranking"):
        export_rows(store, "pairs")


def test_exports_load_as_the_stages_read_them(pairwise, tmp_path):
    expected = {"pairs": "comparison", "rankings": "ranking"}
    for fmt, kind in expected.items():
        for resolve in ("majority", "all"):
            rows, _ = export_rows(pairwise, fmt, resolve)
            path = write_export(rows, tmp_path / f"{fmt}-{resolve}.jsonl")
            loaded = load_records(str(path))
            assert loaded.kind == kind and len(loaded.records) == len(rows)
            assert [r.weight for r in loaded.records] == pytest.approx([r["weight"] for r in rows])
    rows, _ = export_rows(pairwise, "sft")
    loaded = load_records(str(write_export(rows, tmp_path / "sft.jsonl")), expect="sft")
    assert [r.completion for r in loaded.records] == ["good 1", "bad 2"]


def test_stats_hand_worked(pairwise):
    stats = project_stats(pairwise)
    q = stats["questions"]["pairwise"]
    # Values per item: 1: [0, 0, 1]; 2: [1, 1, tie]; 3: [0, 1, tie]; 4: [tie, tie].
    # Agreeing pairs: 1 + 1 + 0 + 1 = 3 of 3 + 3 + 3 + 1 = 10.
    assert q["raw_agreement"] == pytest.approx(0.3)
    assert q["cohen_kappa"] is None  # three annotators
    # Fleiss: P_i = agreeing pairs / C(m,2) = 1/3, 1/3, 0, 1 -> P̄ = 5/12; shares over 11 values:
    # 0: 3, 1: 4, tie: 4 -> P_e = (9 + 16 + 16) / 121 = 41/121.
    p_bar, p_e = 5 / 12, 41 / 121
    assert q["fleiss_kappa"] == pytest.approx((p_bar - p_e) / (1 - p_e))
    # Position bias: ann and bob answered decisively on items 1-3 (3 each), cy on item 1 only.
    assert q["position_bias"]["decisive"] == 7
    people = {a["name"]: a for a in stats["annotators"]}
    # ann vs the others' majority: item 1 (others 0, 1: no majority), 2 (others 1, tie: none),
    # 3 (1, tie: none), 4 (tie: bob alone -> tie, ann tie: agrees) -> 1 of 1.
    assert people["ann"]["agreement_with_majority"]["pairwise"] == 1.0
    assert people["cy"]["submitted"] == 3 and people["cy"]["median_seconds"] == 3.0
    assert stats["progress"] == {
        "items": 4, "needed": 12, "submitted": 11, "complete_items": 3, "started_items": 4, "gold_items": 0, "judge_verdicts": 0,
    }  # fmt: skip


def test_gold_items_score_annotators(tmp_path):
    store = Store.create(tmp_path / "g", ProjectConfig(questions=["pairwise"], overlap=2))
    store.add_items(
        [
            ("t:1", "Q1", ["right", "wrong"], {"pairwise": {"verdict": "A", "better": 0}}),
            ("t:2", "Q2", ["m", "n"], None),
        ]
    )
    judge(store, "ann", {1: {"pairwise": "A"}, 2: {"pairwise": "B"}})
    judge(store, "bob", {1: {"pairwise": "B"}})
    people = {a["name"]: a for a in project_stats(store)["annotators"]}
    assert (people["ann"]["gold_answered"], people["ann"]["gold_accuracy"]) == (1, 1.0)
    assert (people["bob"]["gold_answered"], people["bob"]["gold_accuracy"]) == (1, 0.0)


def test_repeated_completions_merge_in_rankings(tmp_path):
    """A model may sample one text twice; a ranking row cannot rank it two ways, so the repeats
    become one completion at the mean of their places (and the reward loader accepts the row)."""
    store = make_project(tmp_path / "rep", ["ranking"], [("Q", ["same", "other", "same", "last"])], overlap=1)
    judge(store, "ann", {1: {"ranking": [0, 1, 2, 3]}})
    rows, _ = export_rows(store, "rankings")
    # places (0 = best): same 0 and 2 -> 1.0; other 1; last 3 -> ranks 1, 1, 2 (a tie).
    assert rows[0]["completions"] == ["same", "other", "last"] and rows[0]["ranks"] == [1, 1, 2]
    path = write_export(rows, tmp_path / "r.jsonl")
    assert load_records(str(path)).records[0].ranks == [1, 1, 2]
    pairs, _ = export_rows(store, "pairs")
    assert ("same", "same") not in {(p["chosen"], p["rejected"]) for p in pairs}
