"""An OpenAI-compatible chat-completions server on 127.0.0.1 that answers by a rule written in Python:
a stand-in judge for the demo's simulated feedback and for tests, spoken to through the same client
(`rlhf.judge.client`) as a hosted API or `vllm serve`.

    def rule(model, text) -> Reply | None:     # None: HTTP 503 (busy), to exercise retries
        return Reply("A", {"A": 0.9, "B": 0.1})
    with rule_server(rule) as server:          # server.url: http://127.0.0.1:<port>/v1
        ...                                    # server.requests: every request body, in order

`Reply.probabilities` become the reply's `logprobs.content[0].top_logprobs` when the request asks for
log-probabilities, as OpenAI's API and vLLM return them.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str
    """What the judge says."""
    probabilities: dict[str, float] = field(default_factory=dict)
    """Token -> probability, returned as the first token's top log-probabilities (none: left out)."""


Rule = Callable[[str, str], "Reply | None"]
"""(requested model name, the last message's text) -> the reply, or None for HTTP 503."""


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        reply = self.server.rule(body["model"], body["messages"][-1]["content"])
        if reply is None:
            return self._send(503, {"error": {"message": "busy"}})
        top = [
            {"token": t, "logprob": math.log(p) if p > 0 else -1e9} for t, p in reply.probabilities.items()
        ]
        logprobs = {"content": [{"token": reply.text, "logprob": 0.0, "top_logprobs": top}]}
        choice = {"index": 0, "message": {"role": "assistant", "content": reply.text},
                  "logprobs": logprobs if top and body.get("logprobs") else None, "finish_reason": "stop"}  # fmt: skip
        self._send(200, {"object": "chat.completion", "model": body["model"], "choices": [choice]})

    def _send(self, status: int, value: dict) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def rule_server(rule: Rule) -> Iterator[Any]:
    """The server, answering by `rule` on a free port of 127.0.0.1 until the block ends."""
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.rule = rule
    server.lock = threading.Lock()
    server.requests = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
