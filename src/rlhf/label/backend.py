"""Where a labeling project's data lives, SQLite or PostgreSQL, and everything that differs between them.

`store.py` writes its SQL once, in SQLite's words (`?` placeholders), and asks a `Backend` for the
few pieces the two databases spell differently; a `Connection` translates placeholders on the way.

    SQLite (the default)   <project>/label.db, WAL journal, synchronous=FULL, busy_timeout 30 s,
                           autocommit with explicit transactions; a write starts with
                           `BEGIN IMMEDIATE`, which takes the database's write lock at once.
    PostgreSQL (teams)     the project folder holds only `database.json` {"url": ...}, mode 0600
                           since the URL may carry a password; one project per database. A write
                           starts with `BEGIN` and `pg_advisory_xact_lock(WRITE_LOCK_KEY)`: one
                           writer at a time, as in SQLite, so assignment stays even and the overlap
                           is never exceeded. Transactions are READ COMMITTED: every statement after
                           the lock sees what earlier writers committed. A COMMIT is durable
                           (synchronous_commit=on, PostgreSQL's default).

psycopg (3) is imported only when a PostgreSQL URL is used.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DB_FILE = "label.db"
DATABASE_FILE = "database.json"
"""In a PostgreSQL-backed project folder: {"url": ...} of the database holding the project."""
POSTGRES_SCHEMES = ("postgresql", "postgres")
WRITE_LOCK_KEY = 0x726C68665F6C6162
"""The advisory lock every write transaction takes in PostgreSQL (the bytes of "rlhf_lab")."""
LOCK_TIMEOUT_SECONDS = 5.0
"""How long a writer waits for the write lock before failing (SQLite's busy_timeout, PostgreSQL's
lock_timeout): a write takes milliseconds, so a wait this long means another process holds the
database, and the request is answered 503 (retry) rather than kept hanging."""


class BackendError(ValueError):
    """A database URL or `database.json` that cannot be used; the store turns it into a StoreError."""


class Connection:
    """One thread's connection, spoken to in SQLite's dialect whatever the database."""

    def __init__(self, raw: Any, backend: Backend) -> None:
        self.raw = raw
        self.backend = backend

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        return self.raw.execute(self.backend.sql(sql), tuple(params))

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        self.backend.executemany(self.raw, self.backend.sql(sql), rows)

    def insert(self, sql: str, params: tuple | list) -> int:
        """Run an INSERT into a table with an `id` key; returns the new row's id."""
        return self.backend.insert(self.raw, sql, tuple(params))

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction holding the database's write lock from its first statement on;
        committed when the block ends, rolled back when it raises."""
        self.backend.begin_write(self)
        try:
            yield self
        except BaseException:
            with suppress(Exception):  # a broken connection: the block's own error is what matters
                self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    @property
    def broken(self) -> bool:
        """True when the connection can no longer be used (a PostgreSQL server went away)."""
        return bool(getattr(self.raw, "closed", False) or getattr(self.raw, "broken", False))

    def close(self) -> None:
        self.raw.close()

    def __del__(self) -> None:
        # A thread's connection is dropped with the thread (the server runs one per HTTP connection).
        with suppress(Exception):  # nothing to do about it while being collected
            self.raw.close()


@dataclass(frozen=True)
class Backend(ABC):
    """What differs between the databases; `SQLiteBackend` and `PostgresBackend` fill it in."""

    path: Path
    """The file in the project folder that locates the data: label.db, or database.json."""

    types = {"id_key": "", "ref": "", "real": ""}
    """Column types the schema template ($id_key, $ref, $real) is written with."""
    upsert_meta = ""
    """SQL setting meta(key, value) whether or not the key exists."""

    def ddl(self, schema: str) -> str:
        return Template(schema).substitute(self.types)

    def sql(self, query: str) -> str:
        return query

    def json_length(self, expr: str) -> str:
        """SQL for the length of the JSON array stored as text in `expr`."""
        return f"json_array_length({expr})"

    @abstractmethod
    def describe(self) -> str:
        """The database in words, for messages (a URL without its password)."""

    @abstractmethod
    def connect(self) -> Connection:
        """A new connection, set up for this store (autocommit; transactions are explicit)."""

    @abstractmethod
    def begin_write(self, conn: Connection) -> None:
        """Open a transaction that holds the write lock from its first statement on."""

    @abstractmethod
    def install_schema(self, conn: Connection, ddl: str) -> None:
        """Create the tables and indexes of `ddl` (already in this dialect)."""

    @abstractmethod
    def holds_project(self, connect: Callable[[], Connection]) -> bool:
        """Whether the project's tables are there; creates nothing (`connect` gives a connection)."""

    @abstractmethod
    def integrity_errors(self) -> tuple[type[Exception], ...]:
        """The driver's exceptions for a broken UNIQUE or CHECK constraint."""

    def executemany(self, raw: Any, sql: str, rows: list[tuple]) -> None:
        raw.executemany(sql, rows)

    @abstractmethod
    def insert(self, raw: Any, sql: str, params: tuple) -> int:
        """Run an INSERT and return the new row's id."""

    @abstractmethod
    def fault(self, err: Exception) -> tuple[str, bool] | None:
        """(a one-line message, whether retrying may succeed) for a driver error that says the
        database cannot take the write (locked, read-only, gone); None for any other error."""

    def identity(self) -> Any:
        """What tells the data's file apart from another put in its place (None: nothing to tell)."""
        return None

    def save(self, directory: Path) -> None:  # noqa: B027 (a default, not a hole: SQLite writes nothing)
        """Write what `open_backend` needs to find the data again (nothing for SQLite)."""


@dataclass(frozen=True)
class SQLiteBackend(Backend):
    types = {"id_key": "INTEGER PRIMARY KEY", "ref": "INTEGER", "real": "REAL"}
    upsert_meta = "INSERT OR REPLACE INTO meta VALUES (?, ?)"

    def describe(self) -> str:
        return self.path.name

    def connect(self) -> Connection:
        # Autocommit mode (isolation_level None): transactions are explicit `BEGIN IMMEDIATE ... COMMIT`.
        conn = sqlite3.connect(
            str(self.path), timeout=LOCK_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a COMMIT is on disk before it returns
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(LOCK_TIMEOUT_SECONDS * 1000)}")
        return Connection(conn, self)

    def begin_write(self, conn: Connection) -> None:
        conn.raw.execute("BEGIN IMMEDIATE")

    def install_schema(self, conn: Connection, ddl: str) -> None:
        conn.raw.executescript(ddl)

    def holds_project(self, connect: Callable[[], Connection]) -> bool:
        return self.path.is_file()

    def integrity_errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.IntegrityError,)

    def insert(self, raw: Any, sql: str, params: tuple) -> int:
        return int(raw.execute(sql, params).lastrowid)

    def fault(self, err: Exception) -> tuple[str, bool] | None:
        if not isinstance(err, sqlite3.OperationalError):
            return None
        text = str(err)
        if "locked" in text or "busy" in text:
            return (
                f"{self.path} is locked by another process (waited {LOCK_TIMEOUT_SECONDS:g} s); try again",
                True,
            )
        return f"{self.path} cannot be written ({text}): check the file's and its folder's permissions", False

    def identity(self) -> Any:
        """The file's (device, inode), or None when it is gone: a file deleted or replaced while
        open connections keep writing into the old one would lose every write acknowledged after."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino


@dataclass(frozen=True)
class PostgresBackend(Backend):
    url: str = ""

    types = {
        "id_key": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "ref": "BIGINT",
        "real": "DOUBLE PRECISION",
    }
    upsert_meta = "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"

    def describe(self) -> str:
        return f"the PostgreSQL database {redact(self.url)}"

    def sql(self, query: str) -> str:
        # psycopg's placeholders are %s, so a literal % is written %%. (No `?` inside a string
        # literal in store.py's SQL.)
        return query.replace("%", "%%").replace("?", "%s")

    def json_length(self, expr: str) -> str:
        return f"json_array_length({expr}::json)"

    def connect(self) -> Connection:
        try:
            import psycopg
        except ImportError as err:
            raise BackendError(
                "a PostgreSQL project needs psycopg: pip install 'psycopg[binary]==3.3.9'"
            ) from err
        try:
            conn = psycopg.connect(self.url, autocommit=True, application_name="rlhf-label")
        except psycopg.Error as err:
            raise BackendError(f"cannot connect to {self.describe()}: {err}".strip()) from None
        # Autocommit: reads are one statement each; writes are explicit `BEGIN ... COMMIT`.
        conn.execute(f"SET lock_timeout = '{int(LOCK_TIMEOUT_SECONDS * 1000)}ms'")
        return Connection(conn, self)

    def begin_write(self, conn: Connection) -> None:
        conn.raw.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        try:
            conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        except BaseException:
            conn.raw.execute("ROLLBACK")
            raise

    def install_schema(self, conn: Connection, ddl: str) -> None:
        with conn.write():  # under the write lock: two `init`s at once do not trip over each other
            for statement in ddl.split(";"):
                if statement.strip():
                    conn.raw.execute(statement)

    def holds_project(self, connect: Callable[[], Connection]) -> bool:
        conn = connect()
        if conn.execute("SELECT to_regclass('meta') IS NULL").fetchone()[0]:
            return False
        return conn.execute("SELECT 1 FROM meta WHERE key = 'config'").fetchone() is not None

    def integrity_errors(self) -> tuple[type[Exception], ...]:
        import psycopg

        return (psycopg.IntegrityError,)

    def executemany(self, raw: Any, sql: str, rows: list[tuple]) -> None:
        with raw.cursor() as cursor:
            cursor.executemany(sql, rows)

    def insert(self, raw: Any, sql: str, params: tuple) -> int:
        return int(raw.execute(self.sql(sql) + " RETURNING id", params).fetchone()[0])

    def fault(self, err: Exception) -> tuple[str, bool] | None:
        import psycopg

        if isinstance(err, psycopg.errors.LockNotAvailable):
            return (
                f"{self.describe()} is locked by another writer (waited {LOCK_TIMEOUT_SECONDS:g} s); try again",
                True,
            )
        if isinstance(err, psycopg.errors.ReadOnlySqlTransaction | psycopg.errors.InsufficientPrivilege):
            return f"{self.describe()} cannot be written: {str(err).strip()}", False
        if isinstance(err, psycopg.OperationalError):
            return f"{self.describe()} is unavailable: {str(err).strip()[:200]}", True
        return None

    def save(self, directory: Path) -> None:
        # Created with mode 0600 (never readable by others, not even for a moment): the URL may hold a password.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps({"url": self.url}) + "\n")


def make_backend(directory: Path, database_url: str | None) -> Backend:
    """The backend a new project in `directory` uses: SQLite, or the PostgreSQL database at the URL."""
    if database_url is None:
        return SQLiteBackend(directory / DB_FILE)
    scheme = database_url.split("://", 1)[0].lower() if "://" in database_url else ""
    if scheme not in POSTGRES_SCHEMES:
        raise BackendError(
            f"the database URL {redact(database_url)!r} is not a PostgreSQL URL: "
            "write postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or leave it out for SQLite)"
        )
    return PostgresBackend(directory / DATABASE_FILE, database_url)


def open_backend(directory: Path) -> Backend:
    """The backend of an existing project: PostgreSQL when `database.json` is there, else SQLite."""
    locator = directory / DATABASE_FILE
    if not locator.is_file():
        return SQLiteBackend(directory / DB_FILE)
    try:
        url = json.loads(locator.read_text(encoding="utf-8"))["url"]
        if not isinstance(url, str):
            raise TypeError("url is not a string")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BackendError(f'{locator}: expected {{"url": "postgresql://..."}} ({err})') from None
    return make_backend(directory, url)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))
