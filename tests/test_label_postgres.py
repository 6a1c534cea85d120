"""What is PostgreSQL's own in the labeling store: the project folder holding only the database URL,
one project per database, errors without passwords, the HTTP server and the CLI on PostgreSQL. The
behaviours both databases share (answers, tokens, assignment, leases, undo, skip, refusals, 20
concurrent writers) run on both in test_label_store.py. The server is conftest's `pg_server`."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from label_helpers import Running
from rlhf.label.store import Store, StoreError
from rlhf.label.tasks import ProjectConfig

RLHF = str(Path(sys.executable).with_name("rlhf"))


def pairs(n: int) -> list:
    return [
        (f"cands.jsonl:{i + 1}", f"Question {i}?", [f"answer a{i}", f"answer b{i}"], None) for i in range(n)
    ]


def query(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


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


def test_errors_name_the_database_without_its_password(tmp_path, pg_url, free_port):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "database.json").write_text(json.dumps({"url": pg_url}))
    with pytest.raises(StoreError, match="not a labeling project"):
        Store(empty)
    port = free_port  # nothing listens there
    with pytest.raises(StoreError, match="cannot connect to") as err:
        Store.create(
            tmp_path / "q", ProjectConfig(questions=["pairwise"]), f"postgres://u:hunter2@127.0.0.1:{port}/x"
        )
    assert "hunter2" not in str(err.value) and "u:***@" in str(err.value)
    (empty / "database.json").write_text("{not json")
    with pytest.raises(StoreError, match="database.json: expected"):
        Store(empty)


# ---------------------------------------------------------------- server and CLI


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


@pytest.mark.slow
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
