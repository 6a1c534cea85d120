"""A JSON POST with retries: what every HTTP client of rlhf sends (reward endpoints, LLM judges).

Connection errors, timeouts and 5xx answers are retried `retries` times, waiting `backoff_s *
attempt` seconds in between; 4xx answers and bodies that are not JSON fail at once. Failures are
raised as `error` (the caller's exception class) in one line that starts with `label`.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any


def excerpt(text: str, limit: int = 200) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def post_json(
    url: str,
    body: dict[str, Any],
    *,
    label: str,
    error: type[Exception],
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    retries: int = 2,
    backoff_s: float = 0.5,
) -> Any:
    """POST `body` as JSON to `url`; the answer's JSON."""
    data = json.dumps(body).encode()
    sent = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    failure = ""
    for attempt in range(retries + 1):
        if attempt and backoff_s:
            time.sleep(backoff_s * attempt)
        request = urllib.request.Request(url, data=data, headers=sent, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                text = response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as err:
            failure = f"HTTP {err.code} {err.reason}: {excerpt(err.read().decode('utf-8', errors='replace'))}"
            if err.code < 500:
                raise error(f"{label}: {failure}") from err
            continue
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            failure = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
            continue
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise error(f"{label}: the answer is not JSON ({err}): {excerpt(text)}") from err
    raise error(f"{label}: failed {retries + 1} times; last: {failure}")
