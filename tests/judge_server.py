"""An OpenAI-compatible chat-completions server of the tests' own, answering as a judge by a written
rule: of the two answers in the judge's prompt, the one with more `e`s is better (a tie when equal),
with the verdict token's log-probabilities sigmoid(difference) and its complement. The requested
model name picks a behaviour: `rule` (as above), `first` (always `A`: pure position bias), `garbage`
(a reply that says nothing), `flaky` (HTTP 503 for the first two requests, then `rule`).

    with judge_server() as server: ...   # server.url ("http://127.0.0.1:<port>/v1"), server.requests
"""

from __future__ import annotations

import json
import math
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWERS = re.compile(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\nReply", re.S)


def rule_p_a(a: str, b: str) -> float:
    """P(A better) by the rule: sigmoid of the difference in `e`s."""
    return 1.0 / (1.0 + math.exp(-(a.count("e") - b.count("e"))))


def reply_to(model: str, text: str) -> tuple[str, list[dict] | None]:
    if model == "garbage":
        return "I cannot decide between these.", None
    if model == "first":
        return "A", [{"token": "A", "logprob": math.log(0.9)}, {"token": "B", "logprob": math.log(0.1)}]
    a, b = ANSWERS.search(text).groups()
    p = rule_p_a(a, b)
    verdict = "tie" if a.count("e") == b.count("e") else ("A" if p > 0.5 else "B")
    return verdict, [{"token": "A", "logprob": math.log(p)}, {"token": " B", "logprob": math.log(1 - p)}]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.requests.append(body)
            count = len(server.requests)
        if not self.path.endswith("/v1/chat/completions"):
            return self._send(404, {"error": "not found"})
        if body["model"] == "flaky" and count <= 2:
            return self._send(503, {"error": "busy"})
        model = "rule" if body["model"] == "flaky" else body["model"]
        text, top = reply_to(model, body["messages"][-1]["content"])
        logprobs = (
            {"content": [{"token": text, "logprob": 0.0, "top_logprobs": top}]}
            if top and body.get("logprobs")
            else None
        )
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": logprobs, "finish_reason": "stop"}]})  # fmt: skip

    def _send(self, status: int, value: dict) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
