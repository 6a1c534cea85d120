"""The labeling store on a real PostgreSQL server: the same behaviours as on SQLite (answers in original
indices, hashed tokens, even assignment within the overlap, leases, undo and skip, refusals that change
nothing), no submission lost or doubled by 20 concurrent writers, the HTTP server and the CLI.

A throwaway server (Debian's postgresql, what scripts/setup.sh installs) is started once for this
module on a free port, with a fresh database per test, and stopped at the end."""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from label_helpers import Running
from rlhf.label.store import LEASE_SECONDS, Store, StoreError
from rlhf.label.tasks import AnswerError, ProjectConfig

RLHF = str(Path(sys.executable).with_name("rlhf"))
_databases = itertools.count()


def pairs(n: int) -> list:
    return [
        (f"cands.jsonl:{i + 1}", f"Question {i}?", [f"answer a{i}", f"answer b{i}"], None) for i in range(n)
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_server():
    """A PostgreSQL server of its own (trust auth, 127.0.0.1 only); yields the URL of its `postgres` db."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "scripts/setup.sh installs Debian's `postgresql` package"
        )
    bindir = Path(found[-1]).parent
    as_postgres = os.geteuid() == 0  # initdb refuses to run as root
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    root = Path(
        tempfile.mkdtemp(prefix="rlhf-pg-")
    )  # not under pytest's 0700 basetemp: postgres must reach it
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if as_postgres:
        for path in (root, sockets):
            shutil.chown(path, "postgres", "postgres")

    def run(*args: str) -> None:
        proc = subprocess.run([*prefix, *args], cwd=root, capture_output=True, text=True, timeout=120)
        log_text = log.read_text() if log.exists() else ""
        assert proc.returncode == 0, f"{args[0]} failed: {proc.stdout}{proc.stderr}{log_text}"

    port = _free_port()
    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    run(str(bindir / "pg_ctl"), "-w", "-D", str(data), "-l", str(log), "-o", options, "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            cwd=root, capture_output=True, timeout=120,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def pg_url(pg_server) -> str:
    """The URL of a new, empty database."""
    import psycopg

    name = f"label_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{pg_server}/{name}"


def query(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture()
def store(tmp_path, pg_url):
    s = Store.create(tmp_path / "proj", ProjectConfig(questions=["pairwise"], overlap=2), pg_url)
    s.add_items(pairs(4))
    return s


# ---------------------------------------------------------------- the project folder


def test_the_folder_holds_only_the_url_with_mode_0600_and_reopens(tmp_path, pg_url):
    cfg = ProjectConfig(questions=["ranking"], overlap=3, shuffle=False)
    Store.create(tmp_path / "p", cfg, pg_url)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["database.json"]
    locator = tmp_path / "p" / "database.json"
    assert stat.S_IMODE(locator.stat().st_mode) == 0o600
    assert json.loads(locator.read_text()) == {"url": pg_url}
    again = Store(tmp_path / "p")
    assert again.config == cfg and again.path == locator
    again.set_meta("url", "http://a")
    again.set_meta("url", "http://b")  # the upsert replaces
    assert again.get_meta("url") == "http://b"


def test_a_database_holds_one_project_and_refusals_leave_nothing(tmp_path, pg_url):
    Store.create(tmp_path / "p", ProjectConfig(questions=["pairwise"]), pg_url)
    with pytest.raises(StoreError, match=r"PostgreSQL database .* already holds a labeling project"):
        Store.create(tmp_path / "other", ProjectConfig(questions=["pairwise"]), pg_url)
    assert not (tmp_path / "other").exists()
    with pytest.raises(StoreError, match="already holds a labeling project"):
        Store.create(tmp_path / "p", ProjectConfig(questions=["pairwise"]), pg_url)
    with pytest.raises(StoreError, match="not a PostgreSQL URL"):
        Store.create(tmp_path / "x", ProjectConfig(questions=["pairwise"]), "mysql://u:secret@h/db")
    assert not (tmp_path / "x").exists()


def test_errors_name_the_database_without_its_password(tmp_path, pg_server, pg_url):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "database.json").write_text(json.dumps({"url": pg_url}))
    with pytest.raises(StoreError, match="not a labeling project"):
        Store(empty)
    port = _free_port()  # nothing listens there
    with pytest.raises(StoreError, match="cannot connect to") as err:
        Store.create(
            tmp_path / "q", ProjectConfig(questions=["pairwise"]), f"postgres://u:hunter2@127.0.0.1:{port}/x"
        )
    assert "hunter2" not in str(err.value) and "u:***@" in str(err.value)
    (empty / "database.json").write_text("{not json")
    with pytest.raises(StoreError, match="database.json: expected"):
        Store(empty)


# ---------------------------------------------------------------- what test_label_store checks on SQLite


def test_answers_are_stored_in_original_indices_with_the_display_order(tmp_path, pg_url):
    s = Store.create(tmp_path / "p", ProjectConfig(questions=["ranking"]), pg_url)
    s.add_items([("f:1", [{"role": "user", "content": "Q"}], ["zero", "one", "two"], None)])
    a = s.authenticate(s.add_annotator("a")).id
    assignment = s.next_assignment(a)
    order = assignment.order
    assert sorted(order) == [0, 1, 2] and assignment.item.prompt == [{"role": "user", "content": "Q"}]
    s.submit(a, assignment.item.id, {"ranking": [2, 0, 1]}, seconds=2.0)
    (row,) = s.submissions()
    assert row["answer"] == {"ranking": [order[2], order[0], order[1]]} and row["order"] == order
    assert row["seconds"] == 2.0 and isinstance(row["created"], float) and row["undone"] is False


def test_tokens_are_stored_hashed_and_authenticate(store, pg_url):
    token = store.add_annotator("ann")
    owner = store.add_annotator("boss", role="owner")
    assert store.authenticate(token).name == "ann" and store.authenticate(owner).role == "owner"
    assert store.authenticate("not-a-token") is None and store.authenticate("") is None
    rows = query(pg_url, "SELECT name, token_hash, role FROM annotators ORDER BY id")
    assert rows == [
        ("ann", hashlib.sha256(token.encode()).hexdigest(), "annotator"),
        ("boss", hashlib.sha256(owner.encode()).hexdigest(), "owner"),
    ]
    dump = json.dumps(query(pg_url, "SELECT * FROM annotators")) + json.dumps(
        query(pg_url, "SELECT * FROM meta")
    )
    assert token not in dump and owner not in dump
    with pytest.raises(StoreError, match="already exists"):
        store.add_annotator("ann")
    assert [a.name for a in store.annotators()] == ["ann", "boss"]


def test_items_must_fit_the_questions(store):
    with pytest.raises(StoreError, match="cands.jsonl:9: 3 completions, .* need exactly 2"):
        store.add_items([("cands.jsonl:9", "Q", ["a", "b", "c"], None)])
    assert [item.id for item in store.items()] == [1, 2, 3, 4]
    assert store.item(2).completions == ["answer a1", "answer b1"]
    with pytest.raises(StoreError, match="no item 99"):
        store.item(99)


def test_assignment_spreads_items_evenly_and_never_repeats_an_item(store):
    ids = {name: store.authenticate(store.add_annotator(name)).id for name in ("a", "b", "c")}
    seen = {name: [] for name in ids}
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
    assert all(len(items) == len(set(items)) for items in seen.values())
    assert Counter(s["item_id"] for s in store.submissions()) == {1: 2, 2: 2, 3: 2, 4: 2}
    assert len({seen["a"][0], seen["b"][0], seen["c"][0]}) == 3
    assert store.progress(ids["a"]) == {"items": 4, "needed": 8, "submitted": 8, "mine": len(seen["a"])}


def test_an_open_assignment_comes_back_with_the_same_order_and_lapses_after_the_lease(tmp_path, pg_url):
    s = Store.create(tmp_path / "p", ProjectConfig(questions=["ranking"], overlap=1), pg_url)
    s.add_items([("f:1", "Q", ["a", "b", "c", "d"], None)])
    a, b = (s.authenticate(s.add_annotator(n)).id for n in "ab")
    first = s.next_assignment(a, now=1000.0)
    assert s.next_assignment(a, now=1001.0).order == first.order
    assert s.next_assignment(b, now=1002.0) is None
    taken = s.next_assignment(b, now=1001.0 + LEASE_SECONDS + 1)
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


# ---------------------------------------------------------------- concurrency, server, CLI


def test_twenty_concurrent_annotators_lose_nothing(tmp_path, pg_url):
    s = Store.create(tmp_path / "p", ProjectConfig(questions=["pairwise"], overlap=2), pg_url)
    # 600 items x overlap 2 = 1200 slots for 1000 submissions. With exactly 1000 slots, a last annotator
    # can legitimately find only items they already judged left (whichever writer goes last decides).
    s.add_items(pairs(600))
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
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    assert errors == []
    rows = list(Store(tmp_path / "p").submissions())
    assert len(rows) == 1000 and sorted(r["id"] for r in rows) == sorted(acknowledged)
    assert max(Counter(r["item_id"] for r in rows).values()) <= 2
    assert len({(r["item_id"], r["annotator"]) for r in rows}) == 1000
    # Fewest-first under the write lock: every item judged once before any is judged twice.
    assert sorted(Counter(Counter(r["item_id"] for r in rows).values()).items()) == [(1, 200), (2, 400)]
    print(f"1000 concurrent submissions on PostgreSQL in {elapsed:.1f}s")


def test_the_http_server_runs_on_postgresql(tmp_path, pg_url):
    s = Store.create(tmp_path / "p", ProjectConfig(questions=["pairwise"], overlap=2), pg_url)
    s.add_items(pairs(10))  # 20 slots for 12 answers: nobody runs out of items they have not judged
    tokens = [s.add_annotator(f"ann{i}") for i in range(3)]
    owner = s.add_annotator("boss", role="owner")
    errors: list[str] = []

    def work(srv: Running, token: str) -> None:
        client = srv.client(token)
        try:
            for _ in range(4):
                item = client.next()["item"]
                status, data = client.submit(item["id"], {"pairwise": "B"})
                if status != 200:
                    errors.append(f"{status} {data}")
        except Exception as err:  # noqa: BLE001 - reported by the test
            errors.append(repr(err))
        finally:
            client.close()

    with Running(s) as srv:
        threads = [threading.Thread(target=work, args=(srv, t)) for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        boss = srv.client(owner)
        status, stats = boss.json("GET", "/api/stats")
        boss.close()
    assert not errors, errors
    assert status == 200 and stats["progress"]["submitted"] == 12
    per_item = Counter(dict(query(pg_url, "SELECT item_id, COUNT(*) FROM submissions GROUP BY item_id")))
    assert sorted(Counter(per_item.values()).items()) == [(1, 8), (2, 2)]  # fewest-first, within overlap
    pairs_judged = query(pg_url, "SELECT COUNT(DISTINCT (item_id, annotator_id)) FROM submissions")
    assert pairs_judged == [(12,)]


def test_cli_init_with_db_then_stats(tmp_path, pg_url):
    rows = [{"prompt": f"Question {i}?", "completions": [f"a{i}", f"b{i}"]} for i in range(3)]
    tasks = tmp_path / "cands.jsonl"
    tasks.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    project = tmp_path / "proj"

    def rlhf(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([RLHF, *args], capture_output=True, text=True, timeout=300)

    proc = rlhf("label", "init", str(project), "--tasks", str(tasks), "--type", "pairwise", "--db", pg_url)
    assert proc.returncode == 0, proc.stderr
    assert "3 items (0 gold) from 3 rows" in proc.stdout
    assert stat.S_IMODE((project / "database.json").stat().st_mode) == 0o600
    assert not (project / "label.db").exists()
    stats = rlhf("label", "stats", str(project), "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["progress"]["items"] == 3
    added = rlhf("label", "add-annotator", str(project), "ann")
    assert added.returncode == 0 and "login link" in added.stdout, added.stderr
    again = rlhf(
        "label", "init", str(tmp_path / "two"), "--tasks", str(tasks), "--type", "pairwise", "--db", pg_url
    )
    assert again.returncode == 2 and "already holds a labeling project" in again.stderr
    assert not (tmp_path / "two").exists()
