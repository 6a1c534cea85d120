"""One chat-completions request to an OpenAI-compatible endpoint, cached on disk.

The cache is a SQLite file keyed by the SHA-256 of (URL, model, request body): the same question to
the same judge is answered from the file, so a rerun sends nothing. Writers in several threads
share one connection under a lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.judge.config import JudgeConfig


class JudgeError(RuntimeError):
    """The judge's endpoint failed or answered something that is not a chat completion."""


@dataclass
class Reply:
    text: str
    """The judge's reply."""
    top_logprobs: list[dict[str, Any]] | None
    """The first generated token's alternatives ([{token, logprob}]), when the server returned them."""
    cached: bool = False


class ChatClient:
    """`client.ask(text) -> Reply`; thread-safe."""

    def __init__(self, cfg: JudgeConfig) -> None:
        if not cfg.url:
            raise JudgeError("the judge needs `judge.url` (an OpenAI-compatible endpoint)")
        self.cfg = cfg
        self.url = cfg.url.rstrip("/") + "/chat/completions"
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        if cfg.cache:
            Path(cfg.cache).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(cfg.cache, check_same_thread=False, timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
            self.db.commit()
        self.sent = 0
        """Requests sent (not answered from the cache)."""

    def body(self, text: str, max_tokens: int | None = None) -> dict[str, Any]:
        cfg = self.cfg
        body: dict[str, Any] = {
            "model": cfg.model_name, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens or cfg.max_tokens, "temperature": cfg.temperature,
        }  # fmt: skip
        if cfg.logprobs:
            body.update(logprobs=True, top_logprobs=5)
        return body

    def ask(self, text: str, max_tokens: int | None = None) -> Reply:
        """The judge's reply to `text` (at most `max_tokens`, default `judge.max_tokens`)."""
        from rlhf.http import post_json

        body = self.body(text, max_tokens)
        key = hashlib.sha256(json.dumps([self.url, body], sort_keys=True).encode()).hexdigest()
        found = self._cached(key)
        if found is not None:
            return Reply(found["text"], found["top_logprobs"], cached=True)
        cfg = self.cfg
        answer = post_json(self.url, body, label=cfg.label, error=JudgeError, headers=self.headers,
                           timeout_s=cfg.timeout_s, retries=cfg.retries, backoff_s=cfg.backoff_s)  # fmt: skip
        with self.lock:
            self.sent += 1
        reply = _read(answer, cfg.label)
        if self.db is not None:
            with self.lock:
                value = json.dumps({"text": reply.text, "top_logprobs": reply.top_logprobs})
                self.db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, value))
                self.db.commit()
        return reply

    def _cached(self, key: str) -> dict[str, Any] | None:
        if self.db is None:
            return None
        with self.lock:
            row = self.db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


def _read(answer: Any, label: str) -> Reply:
    """The reply text and first-token log-probabilities of a chat-completions answer."""
    try:
        choice = answer["choices"][0]
        text = choice["message"]["content"] or ""
    except (KeyError, IndexError, TypeError) as err:
        raise JudgeError(
            f"{label}: not a chat completion (no choices[0].message.content): {str(answer)[:200]}"
        ) from err
    content = ((choice.get("logprobs") or {}).get("content")) or []
    top = content[0].get("top_logprobs") if content and isinstance(content[0], dict) else None
    return Reply(text, top if isinstance(top, list) else None)
