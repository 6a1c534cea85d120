"""One chat-completions request to an OpenAI-compatible endpoint, cached on disk; `make_client`
picks it or a local model (`rlhf.judge.local`) by the judge's settings.

The cache is a SQLite file keyed by the SHA-256 of (URL, model, request body): the same question to
the same judge is answered from the file, so a rerun sends nothing. Writers in several threads
share one connection under a lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rlhf.judge.cache import Reply, ReplyCache
from rlhf.judge.config import JudgeConfig


class JudgeError(RuntimeError):
    """The judge's endpoint failed or answered something that is not a chat completion."""


class ChatClient:
    """`client.ask(text) -> Reply`, `client.ask_many(texts) -> [Reply]` (concurrently); thread-safe."""

    def __init__(self, cfg: JudgeConfig) -> None:
        if not cfg.url:
            raise JudgeError("the judge needs `judge.url` (an OpenAI-compatible endpoint) or `judge.model`")
        self.cfg = cfg
        self.url = cfg.url.rstrip("/") + "/chat/completions"
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.lock = threading.Lock()
        self.cache = ReplyCache(cfg.cache)
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
        key = self.cache.key([self.url, body])
        found = self.cache.get(key)
        if found is not None:
            return found
        cfg = self.cfg
        answer = post_json(self.url, body, label=cfg.label, error=JudgeError, headers=self.headers,
                           timeout_s=cfg.timeout_s, retries=cfg.retries, backoff_s=cfg.backoff_s)  # fmt: skip
        with self.lock:
            self.sent += 1
        reply = _read(answer, cfg.label)
        self.cache.put(key, reply)
        return reply

    def ask_many(self, texts: Sequence[str], max_tokens: int | None = None) -> list[Reply]:
        """Replies to `texts`, `judge.concurrency` requests in flight; a text asked twice is sent once."""
        distinct = list(dict.fromkeys(texts))
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            answered = dict(zip(distinct, pool.map(lambda t: self.ask(t, max_tokens), distinct)))
        return [answered[text] for text in texts]

    def close(self) -> None:
        self.cache.close()


def make_client(cfg: JudgeConfig) -> Any:
    """The judge's client: its endpoint (`judge.url`), or its local model (`judge.model`)."""
    if cfg.model:
        from rlhf.judge.local import LocalClient

        return LocalClient(cfg)
    return ChatClient(cfg)


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
