"""The labeling project's store on real SQLite and on a real PostgreSQL server (conftest's `pg_server`):
answers in original indices, assignment with overlap, leases, undo and skip, hashed tokens, refusals,
and no acknowledged submission lost under concurrency (both) or SIGKILL (SQLite)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter

import pytest

from rlhf.label.store import LEASE_SECONDS, Store, StoreError
from rlhf.label.tasks import AnswerError, ProjectConfig, canonical_answer


def pairs(n: int) -> list:
    return [
        (f"cands.jsonl:{i + 1}", f"Question {i}?", [f"answer a{i}", f"answer b{i}"], None) for i in range(n)
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database(request) -> str | None:
    """None (SQLite in the project folder) or the URL of a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture()
def store(tmp_path, database):
    s = Store.create(tmp_path / "proj", ProjectConfig(questions=["pairwise"], overlap=2), database)
    s.add_items(pairs(4))
    return s


def stored_bytes(store: Store, database: str | None) -> bytes:
    """Everything the database holds about annotators, as bytes (files for SQLite, rows for PostgreSQL)."""
    if database is None:
        store.close()
        return b"".join(p.read_bytes() for p in store.directory.iterdir() if p.name.startswith("label.db"))
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        rows = (
            conn.execute("SELECT * FROM annotators").fetchall()
            + conn.execute("SELECT * FROM meta").fetchall()
        )
    return json.dumps(rows, default=str).encode()


# ---------------------------------------------------------------- answers: display -> original indices


def test_every_question_is_stored_in_original_indices():
    cfg = ProjectConfig(questions=["ranking", "rating", "label", "correction", "feedback"], scale=[1, 5])
    originals = ["zero", "one", "two"]
    order = [2, 0, 1]  # position 0 shows completion 2, position 1 shows 0, position 2 shows 1
    raw = {
        "ranking": [
            1,
            2,
            0,
        ],  # best: position 1 (= completion 0), then position 2 (= 1), then position 0 (= 2)
        "rating": [5, 1, 3],  # completion 2 -> 5, completion 0 -> 1, completion 1 -> 3
        "label": ["harmful", "okay", "okay"],
        "correction": {"position": 0, "text": "two, fixed"},
        "feedback": "The second one rambles.",
    }
    answer = canonical_answer(raw, order, cfg, originals)
    assert answer == {
        "ranking": [0, 1, 2],
        "rating": [1.0, 3.0, 5.0],
        "label": ["okay", "okay", "harmful"],
        "correction": {"index": 2, "text": "two, fixed"},
        "feedback": "The second one rambles.",
    }


@pytest.mark.parametrize(("verdict", "better"), [("A", 1), ("B", 0), ("tie", None), ("both_bad", None)])
def test_pairwise_verdicts_name_the_original_completion(verdict, better):
    cfg = ProjectConfig(questions=["pairwise"])
    answer = canonical_answer({"pairwise": verdict}, [1, 0], cfg, ["x", "y"])
    assert answer == {"pairwise": {"verdict": verdict, "better": better}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"ranking": [0, 0, 1]}, "exactly once"),
        ({"ranking": [0, 1]}, "exactly once"),
        ({"ranking": ["0", 1, 2]}, "list of positions"),
        ({"rating": [1, 2, 8]}, "off the scale"),
        ({"rating": [1, 2, 2.5]}, "steps of 1"),
        ({"rating": [1, 2, True]}, "must be a number"),
        ({"label": ["okay", "fine", "okay"]}, "must be one of okay, harmful"),
        ({"correction": {"position": 1, "text": "one"}}, "unchanged"),
        ({"correction": {"position": 3, "text": "new"}}, "position must be 0..2"),
        ({"feedback": "   "}, "non-empty"),
        ({"feedback": "x" * 100_001}, "over the limit"),
    ],
)
def test_bad_answers_say_what_is_wrong(raw, message):
    questions = list(raw)
    cfg = ProjectConfig(questions=questions)
    with pytest.raises(AnswerError, match=message):
        canonical_answer(raw, [0, 1, 2], cfg, ["zero", "one", "two"])


def test_an_answer_must_cover_exactly_the_questions_asked():
    cfg = ProjectConfig(questions=["pairwise", "feedback"])
    with pytest.raises(AnswerError, match="missing feedback; not asked: rating"):
        canonical_answer({"pairwise": "A", "rating": [1, 2]}, [0, 1], cfg, ["x", "y"])


# ---------------------------------------------------------------- store


def test_tokens_are_stored_hashed_and_authenticate(store, database):
    token = store.add_annotator("ann")
    owner = store.add_annotator("boss", role="owner")
    assert store.authenticate(token).name == "ann" and store.authenticate(owner).role == "owner"
    assert store.authenticate("not-a-token") is None and store.authenticate("") is None
    raw = stored_bytes(store, database)
    assert token.encode() not in raw and owner.encode() not in raw
    assert hashlib.sha256(token.encode()).hexdigest().encode() in raw
    with pytest.raises(StoreError, match="already exists"):
        store.add_annotator("ann")
    assert [a.name for a in store.annotators()] == ["ann", "boss"]


def test_answers_are_stored_in_original_indices_with_the_display_order(tmp_path, database):
    s = Store.create(tmp_path / "p", ProjectConfig(questions=["ranking"]), database)
    s.add_items([("f:1", [{"role": "user", "content": "Q"}], ["zero", "one", "two"], None)])
    a = s.authenticate(s.add_annotator("a")).id
    assignment = s.next_assignment(a)
    order = assignment.order
    assert sorted(order) == [0, 1, 2] and assignment.item.prompt == [{"role": "user", "content": "Q"}]
    s.submit(a, assignment.item.id, {"ranking": [2, 0, 1]}, seconds=2.0)
    (row,) = s.submissions()
    assert row["answer"] == {"ranking": [order[2], order[0], order[1]]} and row["order"] == order
    assert row["seconds"] == 2.0 and isinstance(row["created"], float) and row["undone"] is False


def test_items_must_fit_the_questions(store, database):
    with pytest.raises(StoreError, match="cands.jsonl:9: 3 completions, .* need exactly 2"):
        store.add_items([("cands.jsonl:9", "Q", ["a", "b", "c"], None)])
    assert [item.id for item in store.items()] == [1, 2, 3, 4]
    assert store.item(2).completions == ["answer a1", "answer b1"]
    with pytest.raises(StoreError, match="no item 99"):
        store.item(99)
    with pytest.raises(StoreError, match="already holds a labeling project"):
        Store.create(store.directory, ProjectConfig(questions=["pairwise"]), database)


def test_assignment_spreads_items_evenly_and_never_repeats_an_item(store):
    ids = {name: store.authenticate(store.add_annotator(name)).id for name in ("a", "b", "c")}
    seen = {name: [] for name in ids}
    # Round-robin until nobody gets anything: 4 items x overlap 2 = 8 submissions.
    progress = True
    while progress:
        progress = False
        for name, annotator in ids.items():
            assignment = store.next_assignment(annotator)
            if assignment is None:
                continue
            seen[name].append(assignment.item.id)
            store.submit(annotator, assignment.item.id, {"pairwise": "A"})
            progress = True
    assert all(len(items) == len(set(items)) for items in seen.values())  # nobody twice
    per_item = Counter(s["item_id"] for s in store.submissions())
    assert per_item == {1: 2, 2: 2, 3: 2, 4: 2}
    # Fewest-first: the first round gave a, b, c three different items.
    assert len({seen["a"][0], seen["b"][0], seen["c"][0]}) == 3
    assert store.progress(ids["a"]) == {"items": 4, "needed": 8, "submitted": 8, "mine": len(seen["a"])}


def test_an_open_assignment_comes_back_with_the_same_order_and_lapses_after_the_lease(tmp_path, database):
    s = Store.create(tmp_path / "p", ProjectConfig(questions=["ranking"], overlap=1), database)
    s.add_items([("f:1", "Q", ["a", "b", "c", "d"], None)])
    a, b = (s.authenticate(s.add_annotator(n)).id for n in "ab")
    first = s.next_assignment(a, now=1000.0)
    assert s.next_assignment(a, now=1001.0).order == first.order  # a reload shows the same page
    assert s.next_assignment(b, now=1002.0) is None  # reserved for a
    taken = s.next_assignment(b, now=1001.0 + LEASE_SECONDS + 1)  # a walked away
    assert taken is not None and taken.item.id == first.item.id


def test_submit_refusals_change_nothing(store):
    a = store.authenticate(store.add_annotator("a")).id
    b = store.authenticate(store.add_annotator("b")).id
    item = store.next_assignment(a).item.id
    with pytest.raises(StoreError, match="no item 99"):
        store.submit(a, 99, {"pairwise": "A"})
    with pytest.raises(StoreError, match="not assigned to you"):
        store.submit(b, item, {"pairwise": "A"})
    with pytest.raises(AnswerError, match="pairwise"):
        store.submit(a, item, {"pairwise": "C"})
    assert list(store.submissions()) == []
    store.submit(a, item, {"pairwise": "tie"}, seconds=3.5)
    with pytest.raises(StoreError, match="already submitted"):
        store.submit(a, item, {"pairwise": "A"})
    rows = list(store.submissions())
    assert len(rows) == 1 and rows[0]["seconds"] == 3.5 and rows[0]["answer"]["pairwise"]["verdict"] == "tie"


def test_undo_reopens_the_item_and_skip_passes_it_on(store):
    a = store.authenticate(store.add_annotator("a")).id
    first = store.next_assignment(a)
    store.submit(a, first.item.id, {"pairwise": "A"})
    assert store.undo_last(a) == first.item.id
    again = store.next_assignment(a)
    assert (again.item.id, again.order) == (first.item.id, first.order)
    store.submit(a, first.item.id, {"pairwise": "B"})
    rows = list(store.submissions(include_undone=True))
    assert [(r["answer"]["pairwise"]["verdict"], r["undone"]) for r in rows] == [("A", True), ("B", False)]
    nxt = store.next_assignment(a)
    store.skip(a, nxt.item.id)
    remaining = []
    while (assignment := store.next_assignment(a)) is not None:
        remaining.append(assignment.item.id)
        store.submit(a, assignment.item.id, {"pairwise": "A"})
    assert nxt.item.id not in remaining and len(remaining) == 2
    assert store.skipped() == {"a": 1}
    assert store.undo_last(store.authenticate(store.add_annotator("fresh")).id) is None


def test_twenty_concurrent_annotators_lose_nothing(tmp_path, database):
    s = Store.create(tmp_path / "p", ProjectConfig(questions=["pairwise"], overlap=2), database)
    s.add_items(pairs(600))  # spare items: the last annotator must find one they have not judged
    annotators = [s.authenticate(s.add_annotator(f"ann{i}")).id for i in range(20)]
    acknowledged: list[int] = []
    lock = threading.Lock()
    errors = []

    def work(annotator: int) -> None:
        try:
            for _ in range(50):
                assignment = s.next_assignment(annotator)
                sid = s.submit(annotator, assignment.item.id, {"pairwise": "A"})
                with lock:
                    acknowledged.append(sid)
        except Exception as exc:  # noqa: BLE001 - reported below with the thread's annotator
            errors.append((annotator, repr(exc)))
        finally:
            s.close()  # this thread's connection

    threads = [threading.Thread(target=work, args=(a,)) for a in annotators]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = list(Store(tmp_path / "p").submissions())
    assert len(rows) == 1000 and sorted(r["id"] for r in rows) == sorted(acknowledged)
    assert max(Counter(r["item_id"] for r in rows).values()) <= 2
    assert len({(r["item_id"], r["annotator"]) for r in rows}) == 1000
    # Fewest-first under the write lock: every item judged once before any is judged twice.
    assert sorted(Counter(Counter(r["item_id"] for r in rows).values()).items()) == [(1, 200), (2, 400)]


WRITER = """
import sys
from rlhf.label.store import Store
s = Store(sys.argv[1])
me = s.authenticate(sys.argv[2]).id
while (a := s.next_assignment(me)) is not None:
    sid = s.submit(me, a.item.id, {"pairwise": "B"})
    print(sid, flush=True)  # acknowledged only after COMMIT returned
"""


@pytest.mark.slow
def test_a_killed_writer_keeps_every_acknowledged_submission(tmp_path):
    s = Store.create(tmp_path / "p", ProjectConfig(questions=["pairwise"]))
    s.add_items(pairs(5000))
    token = s.add_annotator("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "p"), token], stdout=subprocess.PIPE, text=True
    )
    acknowledged = []
    for line in proc.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) == 200:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stored = {r["id"] for r in Store(tmp_path / "p").submissions()}
    assert set(acknowledged) <= stored
    assert json.loads(json.dumps(sorted(stored)))[:200] == sorted(acknowledged)
