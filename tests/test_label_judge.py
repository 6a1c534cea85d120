"""An LLM judge in a labeling project (`rlhf label judge`): on the demo task, the simulated judge (the
gold rule behind an OpenAI-compatible endpoint, wrong on 20% of pairs) labels every item as its own
annotator; its verdicts match the rule item by item, never use up the people's overlap, come first
in the audit queue where it was least sure, are measured against people (agreement and Cohen's
kappa counted by hand here), and are exported apart, each row naming its source."""

from __future__ import annotations

import json
import math

import pytest

from judge_server import by_rule
from label_helpers import make_project
from rlhf.demo.judge import SIMULATED_MODEL, flipped, simulated_judge
from rlhf.demo.task import document_of, gold, make_split
from rlhf.judge.config import JudgeConfig
from rlhf.judge.project import judge_project
from rlhf.judge.ranking import parse_ranking
from rlhf.judge.rule_server import Reply, rule_server
from rlhf.label.export import export_rows
from rlhf.label.quality import format_stats, project_stats
from rlhf.label.queue import audit_key
from rlhf.label.store import Store, StoreError

FLIP, SEED = 0.2, 3


def demo_items(n: int = 24) -> list[tuple[str, list[str]]]:
    """Pairs of the demo task: a document's own demonstration against the next document's (which
    gets facts wrong), and every fourth item two summaries of equal gold (the same in capitals: the
    judge says tie)."""
    rows = make_split(n + 1, seed=11)
    items = []
    for i in range(n):
        prompt, own, other = rows[i]["prompt"], rows[i]["completion"], rows[i + 1]["completion"]
        pair = [own, own.upper()] if i % 4 == 3 else ([own, other] if i % 2 else [other, own])
        items.append((prompt, pair))
    return items


def expected(prompt: str, a: str, b: str) -> tuple[str, float]:
    """The judge's verdict by hand: the gold rule, flipped on the seeded pairs; and P(a)."""
    doc = document_of(prompt)
    diff = gold(doc, a) - gold(doc, b)
    if diff == 0:
        return "tie", 0.5
    if flipped(prompt, a, b, FLIP, SEED):
        diff = -diff
    return ("a" if diff > 0 else "b"), 1 / (1 + math.exp(-diff))


def kappa_by_hand(x: list, y: list) -> float:
    n = len(x)
    p_o = sum(a == b for a, b in zip(x, y)) / n
    p_e = sum((x.count(c) / n) * (y.count(c) / n) for c in set(x) | set(y))
    return (p_o - p_e) / (1 - p_e)


def judge_cfg(url: str, tmp_path) -> JudgeConfig:
    return JudgeConfig(
        url=url, model_name=SIMULATED_MODEL, api_key_env=None, cache=str(tmp_path / "cache.sqlite")
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database(request) -> str | None:
    """None (SQLite in the project folder) or the URL of a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_the_judge_labels_apart_from_people_and_is_audited_where_least_sure(tmp_path, database):
    items = demo_items()
    store = make_project(tmp_path / "p", ["pairwise"], items, database, overlap=1)
    ann = store.add_annotator("ann")
    with simulated_judge(FLIP, SEED) as server:
        stats = judge_project(store, judge_cfg(server.url, tmp_path), "gold")
        assert stats["items"] == 24 and stats["verdicts"] == 24 and stats["abstained"] == 0
        assert stats["requests_sent"] == 48  # both orders of every pair
        again = judge_project(store, judge_cfg(server.url, tmp_path), "gold")
        assert again["items"] == 0  # judged before: left alone
        redo = judge_project(store, judge_cfg(server.url, tmp_path), "gold", again=True)
        assert redo["items"] == 24 and redo["requests_sent"] == 0  # the same questions, from the cache
    hand = {}
    for item in store.items():
        winner, p_a = expected(item.prompt, *item.completions)
        hand[item.id] = winner
        said = item.meta["judge"]["judge:gold"]
        assert said["winner"] == winner and not said["inconsistent"]
        # P(a) read back as exp(log p), averaged over the two orders: a few float64 roundings (~1e-16).
        assert said["p_a"] == pytest.approx(p_a, abs=1e-9)
    assert sum(flipped(p, *c, FLIP, SEED) for p, c in items) > 0  # the judge is wrong somewhere
    judged = [s for s in store.submissions() if s["source"] == "judge:gold"]
    assert len(judged) == 24 and store.progress()["submitted"] == 0  # verdicts are no people's work
    with pytest.raises(StoreError, match="kept for LLM judges"):
        store.add_annotator("judge:me")

    # The audit queue: ties (certainty 0) first, then by |2 P(a) - 1|, as counted here by hand.
    certainty = {i.id: 0.0 if hand[i.id] == "tie" else round(abs(2 * expected(i.prompt, *i.completions)[1] - 1), 6)
                 for i in store.items()}  # fmt: skip
    shown = []
    while (assignment := store.next_assignment(_id(store, "ann"), audit=True)) is not None:
        shown.append(assignment.item.id)
        store.submit(_id(store, "ann"), assignment.item.id, {"pairwise": "tie"})
    assert shown == sorted(certainty, key=lambda i: (certainty[i], i))
    assert [audit_key(i.meta) for i in store.items()] == [certainty[i.id] for i in store.items()]
    assert ann


def _id(store, name: str) -> int:
    return next(a.id for a in store.annotators() if a.name == name)


def test_agreement_with_people_and_the_export_by_source_are_counted_by_hand(tmp_path, database):
    items = demo_items(12)
    store = make_project(tmp_path / "p", ["pairwise"], items, database, overlap=2, shuffle=False)
    for name in ("ann", "ben"):
        store.add_annotator(name)
    with simulated_judge(FLIP, SEED) as server:
        judge_project(store, judge_cfg(server.url, tmp_path), "gold", limit=10)  # items 11, 12 unjudged
    people = {}
    for name in ("ann", "ben"):  # ann answers by gold (no flips), ben always A; items 10-12 skipped
        who = _id(store, name)
        while (assignment := store.next_assignment(who)) is not None:
            item = assignment.item
            if item.id > 9:
                store.skip(who, item.id)
                continue
            doc = document_of(item.prompt)
            diff = gold(doc, item.completions[0]) - gold(doc, item.completions[1])
            answer = "A" if name == "ben" else ("tie" if diff == 0 else ("A" if diff > 0 else "B"))
            store.submit(who, item.id, {"pairwise": answer})
            people[(item.id, name)] = {"A": 0, "B": 1, "tie": "tie"}[answer]
    judge_value = {i.id: {"a": 0, "b": 1, "tie": "tie"}[i.meta["judge"]["judge:gold"]["winner"]]
                   for i in store.items()[:10]}  # fmt: skip
    x = [judge_value[i] for (i, _name) in people]
    y = list(people.values())
    stats = project_stats(store)
    (entry,) = stats["judges"]
    agreement = entry["agreement"]["pairwise"]
    assert (entry["name"], entry["items"], entry["abstained"], entry["inconsistent"]) == (
        "judge:gold",
        10,
        0,
        0,
    )
    assert agreement["units"] == 18 and agreement["items"] == 9
    # The same counts divided in another order: float64 rounding only (~1e-16).
    assert agreement["raw_agreement"] == pytest.approx(sum(a == b for a, b in zip(x, y)) / 18, abs=1e-12)
    assert agreement["cohen_kappa"] == pytest.approx(kappa_by_hand(x, y), abs=1e-12)
    assert stats["progress"]["submitted"] == 18 and stats["progress"]["judge_verdicts"] == 10
    assert [a["name"] for a in stats["annotators"]] == ["ann", "ben"]  # the judge is not among the people
    assert "judge:gold: 10 items judged, 0 abstained" in format_stats(stats)

    rows, report = export_rows(store, "pairs", "majority")
    by_source = {}
    for row in rows:
        by_source.setdefault(row["feedback_source"], []).append(row)
    # People: 9 complete items, minus their majority ties; the judge: its 10 items, minus its ties.
    people_rows = [i for i in range(1, 10) if (people[(i, "ann")] == people[(i, "ben")] != "tie")]
    assert sorted(r["item"] for r in by_source["people"]) == people_rows
    assert sorted(r["item"] for r in by_source["judge:gold"]) == [
        i for i in range(1, 11) if judge_value[i] != "tie"
    ]
    only = export_rows(store, "pairs", "majority", sources="judge")[0]
    assert {r["feedback_source"] for r in only} == {"judge:gold"} and len(only) == len(
        by_source["judge:gold"]
    )
    judgments = export_rows(store, "judgments", sources="judge:gold")[0]
    assert all(r["judge"]["winner"] in ("a", "b", "tie") for r in judgments) and len(judgments) == 10
    assert report.left_out["without judgments"] == 2  # items 11 and 12: nobody, no judge


def test_a_ranking_project_is_ranked_k_at_once_position_bias_caught(tmp_path):
    answers = [["eee e", "e", "ee"], ["x", "eeee", "ee"], ["e", "e e", "ee e e"]]
    store = make_project(tmp_path / "p", ["ranking"], [(f"q{i}", a) for i, a in enumerate(answers)])
    marks = ("[Answer 1]\n", "[Answer 2]\n", "[Answer 3]\n")

    def rule(model: str, text: str) -> Reply:
        shown = [text.split(m)[1].split("\n\n")[0] for m in marks]
        if model == "first":  # always the order shown: a position preference
            return Reply("1 > 2 > 3")
        if model == "garbage":
            return Reply("They are all fine.")
        best = sorted(range(3), key=lambda i: -shown[i].count("e"))
        return Reply(" > ".join(str(i + 1) for i in best))

    with rule_server(rule) as server:
        for name in ("rule", "first", "garbage"):
            cfg = JudgeConfig(url=server.url, model_name=name, api_key_env=None, cache=None)
            judge_project(store, cfg, name)
    for item, a in zip(store.items(), answers):
        said = item.meta["judge"]
        assert said["judge:rule"]["winner"] == sorted(range(3), key=lambda i: -a[i].count("e"))
        assert said["judge:first"]["inconsistent"] and said["judge:first"]["winner"] is None
        assert said["judge:garbage"]["abstained"]
    stats = {j["name"]: j for j in project_stats(store)["judges"]}
    assert (stats["judge:first"]["inconsistent"], stats["judge:garbage"]["abstained"]) == (3, 3)
    assert (
        len([s for s in store.submissions() if s["source"] == "judge:rule"]) == 3
    )  # only readable, consistent ones
    assert parse_ranking("[2] > [3] > [1]", 3) == [1, 2, 0] and parse_ranking("2 > 2 > 1", 3) is None
    assert by_rule("ee", "e").text == "A"


def test_data_sources_weigh_and_leave_out_feedback_by_source(tmp_path):
    from rlhf.config.core import ConfigError
    from rlhf.config.parts import DataConfig
    from rlhf.data.load import load_records
    from rlhf.preference.data import weigh_sources

    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"p{i}", "chosen": "good", "rejected": "bad", "weight": 0.5,
             "feedback_source": ["people", "judge:gold", "judge:other"][i % 3]} for i in range(9)]  # fmt: skip
    rows.append({"prompt": "q", "chosen": "good", "rejected": "bad"})  # no source: people's
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = load_records(DataConfig(path=str(path))).records
    kept, lines = weigh_sources(records, {"people": 1.0, "judge:gold": 0.25})
    assert [r.weight for r in kept] == [0.5, 0.125, 0.5, 0.125, 0.5, 0.125, 1.0]
    assert lines == {"people": "4 rows x1", "judge:gold": "3 rows x0.25", "judge:other": "3 rows left out"}
    assert weigh_sources(records, None) == (records, {})
    with pytest.raises(ConfigError, match="leaves out every row"):
        weigh_sources(records, {"nobody": 1.0})
    with pytest.raises(ConfigError, match="numbers >= 0"):
        DataConfig(path=str(path), sources={"people": -1})


def test_label_judge_on_the_command_line_with_a_local_model(tmp_path, capsys):
    """`rlhf label judge` without a judge is one line naming both ways; with a local model (the
    built-in tiny one, whose replies read as no verdict) every item is recorded as an abstention."""
    from rlhf.cli.main import main

    make_project(tmp_path / "p", ["pairwise"], demo_items(3))
    assert main(["label", "judge", str(tmp_path / "p")]) != 0
    assert "or a local `model` (--set model=PATH)" in capsys.readouterr().err
    code = main(
        ["label", "judge", str(tmp_path / "p"), "--set", "model=builtin:tiny", "engine=hf", "cache=null"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "judge:builtin:tiny judged 3 items (pairwise)" in out
    store = Store(tmp_path / "p")
    said = [item.meta["judge"]["judge:builtin:tiny"] for item in store.items()]
    assert len(said) == 3 and all(s["abstained"] or s["winner"] in ("a", "b", "tie") for s in said)
