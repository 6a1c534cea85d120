"""Shared pieces of the labeling-app tests: a project, a live server on 127.0.0.1, a tiny client."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from typing import Any

from rlhf.label.server import LabelServer
from rlhf.label.store import Store
from rlhf.label.tasks import ProjectConfig


def make_project(
    directory: Path,
    questions: list[str],
    items: list[tuple[Any, list[str]]],
    database: str | None = None,
    **cfg,
) -> Store:
    """A project of `items` (prompt, completions) in SQLite, or in the PostgreSQL `database` URL."""
    store = Store.create(directory, ProjectConfig(questions=questions, **cfg), database)
    store.add_items(
        [(f"tasks.jsonl:{i + 1}", prompt, completions, None) for i, (prompt, completions) in enumerate(items)]
    )
    return store


class Running:
    """A LabelServer in a background thread; `with Running(store) as srv:` ... `srv.client(token)`."""

    def __init__(self, store: Store, **options: Any) -> None:
        self.server = LabelServer(store, "127.0.0.1", 0, quiet=True, **options)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def client(self, token: str | None = None) -> Client:
        return Client(self.port, token)


class Client:
    """One keep-alive connection; `token` goes in an Authorization header."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        send = dict(headers or {})
        if self.token:
            send.setdefault("Authorization", f"Bearer {self.token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            send.setdefault("Content-Type", "application/json")
        if data is not None:
            send.setdefault("Content-Length", str(len(data)))
        try:
            self.conn.request(method, path, body=data, headers=send)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
            # The server closed a kept-alive connection (e.g. after refusing a body): reconnect once.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.conn.request(method, path, body=data, headers=send)
            response = self.conn.getresponse()
        payload = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, payload = self.request(method, path, body)
        return status, json.loads(payload) if payload else None

    def next(self) -> dict[str, Any]:
        status, data = self.json("GET", "/api/next")
        assert status == 200, data
        return data

    def submit(self, item_id: int, answer: Any, seconds: float | None = 1.0) -> tuple[int, Any]:
        return self.json("POST", "/api/submit", {"item_id": item_id, "answer": answer, "seconds": seconds})

    def close(self) -> None:
        self.conn.close()
