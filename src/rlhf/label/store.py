"""A labeling project's storage: items, annotators, assignments and submissions in SQLite or PostgreSQL.

    <project>/label.db        SQLite, the default. WAL journal; every write is one `BEGIN IMMEDIATE`
                              transaction, so an acknowledged submission is on disk
                              (synchronous=FULL) before the server answers. Writers of one process
                              queue on a lock of the process (`_writers`); other processes' writers
                              wait up to the busy timeout for the database's lock.
    <project>/database.json   PostgreSQL, for teams (`Store.create(..., database_url=...)`, `rlhf
                              label init --db URL`): {"url": ...} (mode 0600) of the database that
                              holds the project, one project per database. Writes are serialized the
                              same way (an advisory lock taken right after BEGIN); a COMMIT is durable.

The SQL below is written once, in SQLite's dialect; `rlhf.label.backend` supplies what PostgreSQL
spells differently (placeholders, column types, upserts, new row ids, connection setup).

Assignment: an annotator asking for work first gets back an open assignment of theirs (after a
reload or a crash of their browser); otherwise the next item of the queue (`rlhf.label.queue`: the
fewest people's submissions first, or with `audit` what an LLM judge was least sure of). An assignment
fixes the order its completions are shown in; it lapses after `LEASE_SECONDS` so abandoned work
returns to the pool.

Tokens are random (32 bytes, URL-safe) and stored only as SHA-256 hashes: the database alone does
not let anyone log in.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhf.data.text import broken_text
from rlhf.label.backend import (
    DATABASE_FILE,
    DB_FILE,
    Backend,
    BackendError,
    Connection,
    make_backend,
    open_backend,
)
from rlhf.label.queue import JUDGE_PREFIX, PEOPLE, pick_item
from rlhf.label.tasks import AnswerError, ProjectConfig, canonical_answer

LEASE_SECONDS = 30 * 60
"""How long an assignment stays reserved for its annotator without a submission."""
SESSION_SECONDS = 7 * 24 * 3600
"""How long a login lasts by default (`rlhf label serve --session-hours`)."""
REVOKED = "revoked:"
"""The start of a revoked annotator's `token_hash`: no token hashes to it, so none logs in."""

SESSIONS = """
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    annotator_id $ref NOT NULL REFERENCES annotators(id),
    created $real NOT NULL,
    expires $real NOT NULL
);"""
"""Logins: the browser's cookie holds a session id (its hash kept here), never the token itself.
In the schema of new projects; `Store.ensure_sessions` adds it to a project made before it."""

# $id_key, $ref and $real: column types, spelled by the backend (INTEGER PRIMARY KEY / BIGINT identity, ...).
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id $id_key,
    source TEXT NOT NULL,
    prompt TEXT NOT NULL,
    completions TEXT NOT NULL,
    gold TEXT,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS annotators (
    id $id_key,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('annotator', 'owner')),
    created $real NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    annotator_id $ref NOT NULL REFERENCES annotators(id),
    item_id $ref NOT NULL REFERENCES items(id),
    display_order TEXT NOT NULL,
    assigned $real NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'submitted', 'skipped')),
    PRIMARY KEY (annotator_id, item_id)
);
CREATE TABLE IF NOT EXISTS submissions (
    id $id_key,
    item_id $ref NOT NULL REFERENCES items(id),
    annotator_id $ref NOT NULL REFERENCES annotators(id),
    answer TEXT NOT NULL,
    display_order TEXT NOT NULL,
    created $real NOT NULL,
    seconds $real,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_submission ON submissions (item_id, annotator_id) WHERE undone = 0;
CREATE INDEX IF NOT EXISTS submissions_by_item ON submissions (item_id, undone);
CREATE INDEX IF NOT EXISTS assignments_by_item ON assignments (item_id, state);
"""


class StoreError(ValueError):
    """A request the store refuses (unknown item, not assigned, already answered, ...); nothing changed.
    `status` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 409, *, retry: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retry = retry
        """Whether the same request may succeed later (a database locked for a moment)."""


@dataclass
class Item:
    id: int
    source: str
    """Where the item came from (file:line)."""
    prompt: Any
    """The prompt as JSON: text, or a list of {role, content} messages."""
    completions: list[str]
    gold: dict | None = None
    """A known answer (canonical form) for gold items, never shown to annotators."""
    meta: dict = field(default_factory=dict)
    """What else is known of the item: `judge` holds each LLM judge's verdict by judge name
    (`rlhf.label.judges`)."""


@dataclass
class Annotator:
    id: int
    name: str
    role: str


@dataclass
class Assignment:
    item: Item
    order: list[int]
    """order[p]: the original index of the completion shown at position p."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Store:
    """One project's database; safe to share between threads (each gets its own connection)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.backend: Backend = open_backend(self.directory)
        except BackendError as err:
            raise StoreError(str(err)) from None
        self.path = self.backend.path
        """label.db, or database.json (PostgreSQL): the file in the project folder that locates the data."""
        self._local = threading.local()
        self.identity = self.backend.identity()
        """The database file as opened (see `_write`)."""
        raw = self._read_meta("config") if self._holds_project() else None
        if raw is None:
            raise StoreError(
                f"{self.directory} is not a labeling project (no config in {self.backend.describe()})"
            )
        self.config = ProjectConfig(**json.loads(raw))

    # ------------------------------------------------------------------ creation and connections

    @classmethod
    def create(cls, directory: str | Path, config: ProjectConfig, database_url: str | None = None) -> Store:
        """A new, empty project in `directory` (refuses to overwrite one): in SQLite, or in the
        PostgreSQL database at `database_url` (postgresql://USER:PASSWORD@HOST:PORT/DATABASE)."""
        directory = Path(directory)
        for name in (DB_FILE, DATABASE_FILE):
            if (directory / name).exists():
                raise StoreError(f"{directory} already holds a labeling project ({name})")
        try:
            backend = make_backend(directory, database_url)
        except BackendError as err:
            raise StoreError(str(err)) from None
        fresh = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        try:
            conn = _connect(backend)
            try:
                # Every statement is IF NOT EXISTS: on a database that already holds a project this
                # changes nothing, and the check below refuses.
                backend.install_schema(conn, backend.ddl(SCHEMA + SESSIONS))
                with conn.write():
                    if conn.execute("SELECT 1 FROM meta WHERE key = 'config'").fetchone() is not None:
                        raise StoreError(
                            f"{backend.describe()} already holds a labeling project (one project per database)"
                        )
                    conn.execute("INSERT INTO meta VALUES ('config', ?)", (json.dumps(asdict(config)),))
                    conn.execute("INSERT INTO meta VALUES ('created', ?)", (str(time.time()),))
            finally:
                conn.close()
            backend.save(directory)
        except BaseException:
            if fresh and not any(directory.iterdir()):
                directory.rmdir()  # a refused PostgreSQL project leaves no empty folder behind
            raise
        return cls(directory)

    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.broken:  # a PostgreSQL server restarted: connect again
            with self._database_faults():  # a file that cannot be opened (permissions, a folder in its place)
                conn = self._local.conn = _connect(self.backend)
        return conn

    def _holds_project(self) -> bool:
        return self.backend.holds_project(self._conn)

    def _read_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction that takes the database's write lock at once (see the module
        docstring). Writers of this process queue on a lock of their own first (`_writers`), so
        the database's lock is only ever contended by other processes. It commits only while the
        project's path still names the database it opened with (else the write would be
        acknowledged into a deleted or replaced file); a database that cannot take the write
        (locked by another process, read-only) is a 503 `StoreError`, nothing written."""
        with _writers(self.path), self._database_faults(), self._conn().write() as conn:
            yield conn
            if self.backend.identity() != self.identity:
                raise self._gone()

    @contextmanager
    def _database_faults(self) -> Iterator[None]:
        """A driver error that is the database's state (see `fault_of`) raised as its 503 `StoreError`."""
        try:
            yield
        except StoreError:
            raise
        except Exception as err:
            fault = self.fault_of(err)
            if fault is None:
                raise
            raise fault from None

    def _gone(self) -> StoreError:
        return StoreError(
            f"{self.path} was removed or replaced while in use; nothing more is written through this "
            "process: restart it on the project's database",
            503,
        )

    def fault_of(self, err: Exception) -> StoreError | None:
        """The 503 `StoreError` a database error amounts to (the file gone or replaced, locked,
        read-only, unreachable), or None for an error that is not the database's state."""
        fault = self.backend.fault(err)
        if fault is None:
            return None
        if self.backend.identity() != self.identity:
            return self._gone()
        return StoreError(fault[0], 503, retry=fault[1])

    # ------------------------------------------------------------------ items and annotators

    def add_items(self, items: list[tuple[str, Any, list[str], dict | None]]) -> int:
        """Add (source, prompt JSON, completions, gold answer or None) rows; returns how many."""
        low, high = self.config.completions_needed()
        for source, prompt, completions, _gold in items:
            broken = broken_text({"prompt": prompt, "completions": completions})
            if broken:
                raise StoreError(f"{source}: {broken}")
            if len(completions) < low or (high is not None and len(completions) > high):
                want = f"exactly {low}" if low == high else f"at least {low}"
                raise StoreError(
                    f"{source}: {len(completions)} completions, but the questions {self.config.questions} need {want}"
                )
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO items (source, prompt, completions, gold) VALUES (?, ?, ?, ?)",
                [
                    (s, json.dumps(p), json.dumps(c), json.dumps(g) if g is not None else None)
                    for s, p, c, g in items
                ],
            )
        return len(items)

    def add_annotator(self, name: str, role: str = "annotator") -> str:
        """Register `name`; returns their token (shown once: only its hash is kept)."""
        if not name or not name.strip():
            raise StoreError("an annotator needs a name")
        broken = broken_text(name, "name")
        if broken:
            raise StoreError(f"annotator {broken}")
        if name.startswith(JUDGE_PREFIX):
            raise StoreError(
                f"names starting with {JUDGE_PREFIX!r} are kept for LLM judges (`rlhf label judge`)"
            )
        token = secrets.token_urlsafe(32)
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO annotators (name, token_hash, role, created) VALUES (?, ?, ?, ?)",
                    (name, hash_token(token), role, time.time()),
                )
        except self.backend.integrity_errors():
            raise StoreError(f"an annotator named {name!r} already exists") from None
        return token

    def annotators(self) -> list[Annotator]:
        rows = self._conn().execute("SELECT id, name, role FROM annotators ORDER BY id").fetchall()
        return [Annotator(*row) for row in rows]

    def get_meta(self, key: str) -> str | None:
        return self._read_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(self.backend.upsert_meta, (key, value))

    def authenticate(self, token: str | None) -> Annotator | None:
        if not token:
            return None
        row = (
            self._conn()
            .execute("SELECT id, name, role FROM annotators WHERE token_hash = ?", (hash_token(token),))
            .fetchone()
        )
        return Annotator(*row) if row else None

    # ------------------------------------------------------------------ logins and revocation

    def ensure_sessions(self) -> None:
        """Add the sessions table to a project created before logins had one (a no-op otherwise)."""
        with self._write() as conn:
            conn.execute(self.backend.ddl(SESSIONS).strip().rstrip(";"))

    def start_session(self, annotator_id: int, seconds: float, *, now: float | None = None) -> str:
        """A new login of `annotator_id` lasting `seconds`; returns its id (for the cookie). Expired
        sessions are cleared on the way."""
        now = time.time() if now is None else now
        session = secrets.token_urlsafe(32)
        with self._write() as conn:
            conn.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            conn.execute(
                "INSERT INTO sessions (id_hash, annotator_id, created, expires) VALUES (?, ?, ?, ?)",
                (hash_token(session), annotator_id, now, now + seconds),
            )
        return session

    def session_user(self, session: str | None, *, now: float | None = None) -> Annotator | None:
        """Who a session id belongs to while it lasts; None once expired, ended or revoked."""
        if not session:
            return None
        now = time.time() if now is None else now
        row = (
            self._conn()
            .execute(
                "SELECT a.id, a.name, a.role FROM sessions s JOIN annotators a ON a.id = s.annotator_id "
                "WHERE s.id_hash = ? AND s.expires > ?",
                (hash_token(session), now),
            )
            .fetchone()
        )
        return Annotator(*row) if row else None

    def end_session(self, session: str) -> None:
        """Log out: the session id stops working at once, wherever its cookie is."""
        with self._write() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", (hash_token(session),))

    def revoke(self, name: str, *, reissue: bool = False) -> str | None:
        """End `name`'s token and every login made with it; with `reissue`, returns a new token
        (their judgments stay theirs), else None and they cannot log in again."""
        token = secrets.token_urlsafe(32) if reissue else None
        with self._write() as conn:
            row = conn.execute("SELECT id FROM annotators WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise StoreError(f"no annotator named {name!r} in this project", 404)
            stored = hash_token(token) if token else f"{REVOKED}{row[0]}:{secrets.token_hex(8)}"
            conn.execute("UPDATE annotators SET token_hash = ? WHERE id = ?", (stored, row[0]))
            conn.execute("DELETE FROM sessions WHERE annotator_id = ?", (row[0],))
        return token

    def item(self, item_id: int) -> Item:
        row = (
            self._conn()
            .execute("SELECT id, source, prompt, completions, gold, meta FROM items WHERE id = ?", (item_id,))
            .fetchone()
        )
        if row is None:
            raise StoreError(f"no item {item_id}", 404)
        return _item(row)

    # ------------------------------------------------------------------ the annotator's loop

    def next_assignment(
        self, annotator_id: int, *, now: float | None = None, audit: bool = False
    ) -> Assignment | None:
        """The annotator's open assignment, or a new one (`rlhf.label.queue`; `audit`: what the
        judges were least sure of first); None when done."""
        now = time.time() if now is None else now
        with self._write() as conn:
            row = conn.execute(
                "SELECT item_id, display_order FROM assignments WHERE annotator_id = ? AND state = 'open' "
                "ORDER BY assigned LIMIT 1",
                (annotator_id,),
            ).fetchone()
            if row is None:
                row = self._assign(conn, annotator_id, now, audit)
            else:
                conn.execute(
                    "UPDATE assignments SET assigned = ? WHERE annotator_id = ? AND item_id = ?",
                    (now, annotator_id, row[0]),
                )
        if row is None:
            return None
        return Assignment(self.item(row[0]), json.loads(row[1]))

    def _assign(self, conn: Connection, annotator_id: int, now: float, audit: bool):
        row = pick_item(
            conn, self.backend.json_length("i.completions"), annotator_id, now - LEASE_SECONDS,
            self.config.overlap, audit=audit,
        )  # fmt: skip
        if row is None:
            return None
        item_id, n = row
        order = list(range(n))
        if self.config.shuffle:
            secrets.SystemRandom().shuffle(order)
        conn.execute(
            "INSERT INTO assignments VALUES (?, ?, ?, ?, 'open')",
            (annotator_id, item_id, json.dumps(order), now),
        )
        return item_id, json.dumps(order)

    def submit(
        self, annotator_id: int, item_id: int, raw_answer: Any, *, seconds: float | None = None
    ) -> int:
        """Check and store an answer to the annotator's assignment of `item_id`; returns its id.
        Raises `AnswerError` (bad answer) or `StoreError` (not theirs, already answered); both
        leave the database unchanged."""
        with self._write() as conn:
            order = self._open_order(conn, annotator_id, item_id)
            item = self.item(item_id)
            answer = canonical_answer(raw_answer, order, self.config, item.completions)
            submission_id = conn.insert(
                "INSERT INTO submissions (item_id, annotator_id, answer, display_order, created, seconds) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    item_id,
                    annotator_id,
                    json.dumps(answer, allow_nan=False),
                    json.dumps(order),
                    time.time(),
                    seconds,
                ),
            )
            conn.execute(
                "UPDATE assignments SET state = 'submitted' WHERE annotator_id = ? AND item_id = ?",
                (annotator_id, item_id),
            )
            return submission_id

    def skip(self, annotator_id: int, item_id: int) -> None:
        """Pass on the item: it goes to someone else and never back to this annotator."""
        with self._write() as conn:
            self._open_order(conn, annotator_id, item_id)
            conn.execute(
                "UPDATE assignments SET state = 'skipped' WHERE annotator_id = ? AND item_id = ?",
                (annotator_id, item_id),
            )

    def undo_last(self, annotator_id: int) -> int | None:
        """Withdraw the annotator's newest live submission; its item becomes their open assignment
        again (same display order). Returns the item id, or None when there is nothing to undo."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, item_id FROM submissions WHERE annotator_id = ? AND undone = 0 ORDER BY id DESC LIMIT 1",
                (annotator_id,),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE submissions SET undone = 1 WHERE id = ?", (row[0],))
            conn.execute(
                "UPDATE assignments SET state = 'open', assigned = ? WHERE annotator_id = ? AND item_id = ?",
                (time.time(), annotator_id, row[1]),
            )
            return int(row[1])

    def _open_order(self, conn: Connection, annotator_id: int, item_id: int) -> list[int]:
        row = conn.execute(
            "SELECT display_order, state FROM assignments WHERE annotator_id = ? AND item_id = ?",
            (annotator_id, item_id),
        ).fetchone()
        if row is None:
            exists = conn.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone()
            if exists is None:
                raise StoreError(f"no item {item_id}", 404)
            raise StoreError(f"item {item_id} is not assigned to you", 403)
        if row[1] != "open":
            raise StoreError(f"item {item_id} was already {row[1]}")
        return json.loads(row[0])

    # ------------------------------------------------------------------ reading back

    def submissions(self, *, include_undone: bool = False) -> Iterator[dict[str, Any]]:
        """Every (live) submission with its annotator's name and `source` (`people`, or the judge's
        `judge:<name>`), oldest first."""
        rows = (
            self._conn()
            .execute(
                "SELECT s.id, s.item_id, a.name, s.answer, s.display_order, s.created, s.seconds, s.undone "
                "FROM submissions s JOIN annotators a ON a.id = s.annotator_id "
                + ("" if include_undone else "WHERE s.undone = 0 ")
                + "ORDER BY s.id"
            )
            .fetchall()
        )
        for sid, item_id, name, answer, order, created, seconds, undone in rows:
            yield {
                "id": sid, "item_id": item_id, "annotator": name, "answer": json.loads(answer),
                "order": json.loads(order), "created": created, "seconds": seconds, "undone": bool(undone),
                "source": name if name.startswith(JUDGE_PREFIX) else PEOPLE,
            }  # fmt: skip

    def skipped(self) -> dict[str, int]:
        """Items each annotator skipped, by name."""
        sql = "SELECT a.name, COUNT(*) FROM assignments s JOIN annotators a ON a.id = s.annotator_id "
        return dict(self._conn().execute(sql + "WHERE s.state = 'skipped' GROUP BY a.name").fetchall())

    def items(self) -> list[Item]:
        rows = self._conn().execute(
            "SELECT id, source, prompt, completions, gold, meta FROM items ORDER BY id"
        )
        return [_item(row) for row in rows.fetchall()]

    def progress(self, annotator_id: int | None = None) -> dict[str, int]:
        """Counts for the progress bar: the project's (people's submissions, not judges'), or one
        annotator's."""
        conn = self._conn()
        total = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        needed = total * self.config.overlap
        done = conn.execute(
            "SELECT COUNT(*) FROM submissions s JOIN annotators a ON a.id = s.annotator_id "
            "WHERE s.undone = 0 AND a.name NOT LIKE ?",
            (JUDGE_PREFIX + "%",),
        ).fetchone()[0]
        out = {"items": total, "needed": needed, "submitted": done}
        if annotator_id is not None:
            mine = conn.execute(
                "SELECT COUNT(*) FROM submissions WHERE annotator_id = ? AND undone = 0", (annotator_id,)
            ).fetchone()[0]
            out["mine"] = mine
        return out

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


_WRITER_LOCKS: dict[str, threading.RLock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


def _writers(path: Path) -> threading.RLock:
    """The lock this process's writers of the project at `path` queue on (one per database, shared
    by every `Store` of it): the server's threads wait their turn here, in order, for as long as the
    writes ahead take, instead of racing for the database's lock and failing after its timeout."""
    key = str(path.resolve())
    with _WRITER_LOCKS_GUARD:
        return _WRITER_LOCKS.setdefault(key, threading.RLock())


def _connect(backend: Backend) -> Connection:
    try:
        return backend.connect()
    except BackendError as err:
        raise StoreError(str(err), 503) from None


def _item(row) -> Item:
    item_id, source, prompt, completions, gold, meta = row
    return Item(
        item_id, source, json.loads(prompt), json.loads(completions), json.loads(gold) if gold else None,
        json.loads(meta or "{}"),
    )  # fmt: skip


__all__ = ["AnswerError", "Annotator", "Assignment", "Item", "Store", "StoreError", "hash_token"]
