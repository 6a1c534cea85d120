"""Logins, cross-site requests and database faults of the labeling server, over real HTTP, on SQLite
and on a real PostgreSQL server (conftest's `pg_server`): login CSRF and CSRF on submissions,
server-side sessions that logout ends and that expire, `rlhf label revoke`, and a database that is
locked, read-only, deleted or replaced."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from label_helpers import Running
from rlhf.label import backend as label_backend
from rlhf.label.store import Store
from rlhf.label.tasks import ProjectConfig

RLHF = str(Path(sys.executable).with_name("rlhf"))
EVIL = "http://evil.example"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database(request) -> str | None:
    """None (SQLite in the project folder) or the URL of a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def project(directory: Path, database: str | None) -> tuple[Store, str, str]:
    """A pairwise project of 4 items, overlap 2: (store, owner's token, annotator bob's token)."""
    store = Store.create(directory, ProjectConfig(questions=["pairwise"], overlap=2), database)
    store.add_items([(f"t.jsonl:{i + 1}", f"prompt {i}", [f"a{i}", f"b{i}"], None) for i in range(4)])
    return store, store.add_annotator("olga", "owner"), store.add_annotator("bob")


@pytest.fixture
def served(tmp_path, database):
    store, owner, bob = project(tmp_path / "p", database)
    with Running(store) as srv:
        yield store, srv, owner, bob


def origin(srv: Running) -> str:
    return f"http://127.0.0.1:{srv.port}"


def log_in(srv: Running, token: str) -> str:
    """Log in through the form as the login page's own POST does; returns the cookie to send."""
    status, headers, _ = srv.client().request(
        "POST", "/login", raw=f"token={token}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": origin(srv),
                 "Sec-Fetch-Site": "same-origin"},
    )  # fmt: skip
    assert status == 303 and "set-cookie" in headers, headers
    return headers["set-cookie"].split(";")[0]


def submit(srv: Running, headers: dict[str, str], token: str | None = None) -> tuple[int, dict, dict]:
    """Fetch the caller's next item and answer it (A), with `headers` on both."""
    client = srv.client(token)
    status, _, body = client.request("GET", "/api/next", headers=headers)
    assert status == 200, body
    item = json.loads(body)["item"]["id"]
    status, response_headers, body = client.request(
        "POST", "/api/submit", {"item_id": item, "answer": {"pairwise": "A"}, "seconds": 1.0}, headers=headers
    )
    return status, response_headers, json.loads(body)


# ---------------------------------------------------------------- cross-site requests


def test_no_page_elsewhere_can_log_anyone_in(served):
    """Login CSRF: a form on another site posting someone's token is refused (403, no cookie); a
    login link followed from another site (or from a browser that does not say where it came
    from) only fills in the form; opened by the user it logs in."""
    store, srv, owner, bob = served
    anon = srv.client()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for sent_by in ({"Origin": EVIL}, {"Referer": f"{EVIL}/page"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}):  # fmt: skip
        status, headers, body = anon.request(
            "POST", "/login", raw=f"token={bob}".encode(), headers={**form, **sent_by}
        )
        assert status == 403 and "set-cookie" not in headers, sent_by
        assert "cross-site request refused" in json.loads(body)["error"]
    for followed in ({"Sec-Fetch-Site": "cross-site"}, {}):
        status, headers, page = anon.request("GET", f"/login?token={bob}", headers=followed)
        assert status == 200 and "set-cookie" not in headers
        assert f'value="{bob}"'.encode() in page  # one click on this site's own form logs in
    # Only a token's own characters are ever put back into the page.
    status, _, page = anon.request("GET", '/login?token="><script>alert(1)</script>', headers={})
    assert status == 200 and b"<script>alert" not in page and b"value=" not in page
    status, headers, _ = anon.request("GET", f"/login?token={bob}", headers={"Sec-Fetch-Site": "none"})
    assert status == 303 and "set-cookie" in headers


def test_no_page_elsewhere_can_submit_for_a_logged_in_annotator(served):
    """CSRF on every state-changing route: with the session cookie, a request another site made
    the browser send is refused and changes nothing; this site's own goes through. A script with
    the token in `Authorization` is not a browser's doing and is not asked."""
    store, srv, owner, bob = served
    cookie = log_in(srv, bob)
    for sent_by in ({"Origin": EVIL}, {"Referer": f"{EVIL}/x"}, {"Sec-Fetch-Site": "same-site"}):
        status, _, body = submit(srv, {"Cookie": cookie, **sent_by})
        assert status == 403 and "cross-site" in body["error"], sent_by
        for path in ("/api/skip", "/api/undo", "/logout"):
            assert srv.client().request("POST", path, {}, headers={"Cookie": cookie, **sent_by})[0] == 403
    assert list(store.submissions()) == []
    status, _, _ = submit(srv, {"Cookie": cookie, "Origin": origin(srv), "Sec-Fetch-Site": "same-origin"})
    assert status == 200
    status, _, _ = submit(srv, {"Origin": EVIL}, token=owner)
    assert status == 200
    assert len(list(store.submissions())) == 2


# ---------------------------------------------------------------- sessions and revocation


def test_the_cookie_is_a_session_that_logout_ends_and_time_expires(served):
    store, srv, owner, bob = served
    cookie = log_in(srv, bob)
    assert bob not in cookie  # the cookie holds a session id, never the token
    me = srv.client().request("GET", "/api/me", headers={"Cookie": cookie})
    assert me[0] == 200 and json.loads(me[2])["name"] == "bob"
    same_site = {"Origin": origin(srv)}
    status, headers, _ = srv.client().request("POST", "/logout", {}, headers={"Cookie": cookie, **same_site})
    assert status == 303 and "Max-Age=0" in headers["set-cookie"]
    # A copy of the cookie kept anywhere stops working with the logout, on the server.
    assert srv.client().request("GET", "/api/me", headers={"Cookie": cookie})[0] == 401
    # A session past its end is refused; the cookie's own Max-Age is the server's session length.
    annotator = next(a for a in store.annotators() if a.name == "bob")
    old = store.start_session(annotator.id, 3600, now=time.time() - 7200)
    assert store.session_user(old) is None and store.session_user(old, now=time.time() - 5000) is not None
    assert srv.client().request("GET", "/api/me", headers={"Cookie": f"rlhf_label={old}"})[0] == 401
    assert (
        f"Max-Age={int(srv.server.session_seconds)}"
        in srv.client().request("GET", f"/login?token={bob}", headers={"Sec-Fetch-Site": "none"})[1][
            "set-cookie"
        ]
    )


@pytest.mark.slow
def test_revoke_ends_a_token_and_its_logins_and_can_issue_a_new_one(tmp_path, database):
    store, owner, bob = project(tmp_path / "p", database)
    with Running(store) as srv:
        cookie = log_in(srv, bob)
        assert submit(srv, {}, token=bob)[0] == 200
        run = subprocess.run(
            [RLHF, "label", "revoke", str(tmp_path / "p"), "bob"], capture_output=True, text=True
        )
        assert run.returncode == 0 and "revoked 'bob'" in run.stdout, run.stderr
        assert srv.client(bob).request("GET", "/api/me")[0] == 401
        assert srv.client().request("GET", "/api/me", headers={"Cookie": cookie})[0] == 401
        status, headers, _ = srv.client().request(
            "GET", f"/login?token={bob}", headers={"Sec-Fetch-Site": "none"}
        )
        assert headers["location"] == "/login?failed=1" and "set-cookie" not in headers
        again = subprocess.run(
            [RLHF, "label", "revoke", str(tmp_path / "p"), "bob", "--new-token"],
            capture_output=True,
            text=True,
        )
        assert again.returncode == 0, again.stderr
        token = again.stdout.split("(shown once): ")[1].split()[0]
        me = srv.client(token).request("GET", "/api/me")
        assert me[0] == 200 and json.loads(me[2])["name"] == "bob"
        assert [s["annotator"] for s in store.submissions()] == ["bob"]  # the judgment stays theirs
        unknown = subprocess.run(
            [RLHF, "label", "revoke", str(tmp_path / "p"), "nobody"], capture_output=True, text=True
        )
        lines = [line for line in unknown.stderr.splitlines() if line.strip()]
        assert unknown.returncode != 0 and lines == ["error: no annotator named 'nobody' in this project"]


def test_a_project_made_before_sessions_gets_them_when_served(tmp_path, database):
    """A project whose database has no sessions table (made by an earlier version): `serve`'s
    start-up adds it, and logins work."""
    store, _, bob = project(tmp_path / "p", database)
    store.close()
    if database is None:
        with sqlite3.connect(store.path) as conn:
            conn.execute("DROP TABLE sessions")
    else:
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("DROP TABLE sessions")
    again = Store(tmp_path / "p")
    again.ensure_sessions()
    user = again.authenticate(bob)
    assert user is not None and again.session_user(again.start_session(user.id, 60)) == user


# ---------------------------------------------------------------- database faults


def test_a_locked_database_answers_503_at_once_and_the_retry_succeeds(served, database, monkeypatch):
    """Another process holds the write lock: the submission is refused quickly with a retryable
    503 (Retry-After) and nothing stored; once the lock is released the same request succeeds."""
    store, srv, owner, bob = served
    monkeypatch.setattr(label_backend, "LOCK_TIMEOUT_SECONDS", 0.3)  # read when a connection opens
    client = srv.client(bob)
    item = json.loads(client.request("GET", "/api/next")[2])["item"]["id"]
    answer = {"item_id": item, "answer": {"pairwise": "A"}, "seconds": 1.0}
    if database is None:
        holder = sqlite3.connect(store.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        holder = psycopg.connect(database, autocommit=True)
        holder.execute("SELECT pg_advisory_lock(%s)", (label_backend.WRITE_LOCK_KEY,))
    try:
        status, headers, body = client.request("POST", "/api/submit", answer)
        assert status == 503 and headers.get("retry-after") == "1", body
        assert b"locked by another" in body and b"try again" in body
    finally:
        holder.execute("ROLLBACK" if database is None else "SELECT pg_advisory_unlock_all()")
        holder.close()
    assert list(store.submissions()) == []
    assert client.request("POST", "/api/submit", answer)[0] == 200


def test_the_servers_own_writers_wait_their_turn_past_the_lock_timeout(tmp_path, database, monkeypatch):
    """A writer of the same process in the middle of its transaction (another request's thread)
    makes a submission wait for it, however long past the database's lock timeout, instead of
    failing with "locked by another process" (503): only another process can make it fail."""
    monkeypatch.setattr(label_backend, "LOCK_TIMEOUT_SECONDS", 0.2)  # read when a connection opens
    store, owner, bob = project(tmp_path / "p", database)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._write():
            holding.set()
            release.wait(60)

    answered: list[tuple[int, dict, bytes]] = []
    with Running(store) as srv:
        client = srv.client(bob)
        item = json.loads(client.request("GET", "/api/next")[2])["item"]["id"]
        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(30)
        body = {"item_id": item, "answer": {"pairwise": "A"}, "seconds": 1.0}
        request = threading.Thread(
            target=lambda: answered.append(client.request("POST", "/api/submit", body))
        )
        request.start()
        request.join(timeout=1.0)  # 5x the lock timeout: a request racing for the lock has its 503 by now
        waited = request.is_alive()
        release.set()
        holder.join()
        request.join(60)
    assert waited, f"the submission did not wait for the writer ahead of it: {answered}"
    assert answered[0][0] == 200, answered
    assert [s["annotator"] for s in store.submissions()] == ["bob"]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_writes_stop_being_acknowledged_once_the_database_file_is_gone(tmp_path, how):
    """SQLite: connections opened before the file was deleted (or replaced by another, e.g. a backup
    restored) would keep writing into the old file; the server refuses (503) instead of
    acknowledging writes that the project's path no longer holds."""
    store, owner, bob = project(tmp_path / "p", None)
    with Running(store) as srv:
        assert submit(srv, {}, token=bob)[0] == 200
        client = srv.client(bob)
        item = json.loads(client.request("GET", "/api/next")[2])["item"]["id"]
        path = store.path
        if how == "deleted":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            copy = path.with_name("copy.db")
            shutil.copy(path, copy)
            os.replace(copy, path)
        answer = {"item_id": item, "answer": {"pairwise": "A"}, "seconds": 1.0}
        status, _, body = client.request("POST", "/api/submit", answer)
        assert status == 503 and b"was removed or replaced while in use" in body, body
        assert client.request("GET", "/api/next")[0] == 503  # reads say so too


@pytest.mark.slow
def test_a_database_serve_cannot_write_stops_it_in_one_line(tmp_path):
    """A database file that cannot be written: `rlhf label serve` ends with one line naming the
    file, no traceback. Made read-only by its mode, or, for root (whom modes do not stop), by the
    file system's immutable flag."""
    store, _, _ = project(tmp_path / "p", None)
    store.close()
    path = store.path
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("root, on a file system without chattr +i: nothing here can make the file read-only")
    else:
        path.chmod(0o444)
    try:
        proc = subprocess.run(
            [RLHF, "label", "serve", str(tmp_path / "p"), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "label.db" in lines[0] and "cannot be written" in lines[0]


@pytest.mark.slow
def test_a_read_only_postgresql_database_stops_serve_in_one_line(tmp_path, pg_url):
    """The PostgreSQL side of the start-up check: a database that takes no writes (here every
    transaction read-only by default, as on a standby) ends `serve` in one line naming it."""
    import psycopg

    project(tmp_path / "p", pg_url)
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    proc = subprocess.run(
        [RLHF, "label", "serve", str(tmp_path / "p"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the PostgreSQL database") and "cannot be written" in lines[0]
    assert "read-only transaction" in lines[0]
