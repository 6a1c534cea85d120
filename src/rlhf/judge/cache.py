"""The judge's answers: one `Reply`, and a SQLite file of them keyed by what was asked (a rerun asks
nothing twice)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    text: str
    """The judge's reply."""
    top_logprobs: list[dict[str, Any]] | None
    """The first generated token's alternatives ([{token, logprob}]), when the server returned them."""
    cached: bool = False


class ReplyCache:
    """Replies on disk (SQLite), keyed by the SHA-256 of what was asked; None path: no cache."""

    def __init__(self, path: str | None) -> None:
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
            self.db.commit()

    @staticmethod
    def key(asked: Any) -> str:
        return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> Reply | None:
        if self.db is None:
            return None
        with self.lock:
            row = self.db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        found = json.loads(row[0])
        return Reply(found["text"], found["top_logprobs"], cached=True)

    def put(self, key: str, reply: Reply) -> None:
        if self.db is not None:
            with self.lock:
                value = json.dumps({"text": reply.text, "top_logprobs": reply.top_logprobs})
                self.db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, value))
                self.db.commit()

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
