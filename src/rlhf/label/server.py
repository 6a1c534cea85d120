"""The labeling web app: a small threaded HTTP server over one project's `Store`.

Pages: /login (the only page open without a token), /label (annotators and owners), /owner (owners).
JSON API, every route behind a token: a login's session cookie (its id, never the token; the
session lives on the server, and POST /logout ends it), or `Authorization: Bearer <token>`. A POST
sent with the cookie must come from this server's own pages (`_check_same_origin`: no CSRF).

    GET  /api/me         who is logged in, the project's questions, progress
    GET  /api/next       the caller's next item (completions in their shuffled display order)
    POST /api/submit     {"item_id", "answer", "seconds"}; the answer in display positions
    POST /api/skip       {"item_id"}
    POST /api/undo       {} -> withdraws the caller's newest submission
    GET  /api/stats      owner: progress, agreement, annotators (`quality.project_stats`)
    GET  /api/export     owner: ?format=pairs|rankings|ratings|labels|sft|judgments&resolve=majority|all
                         &sources=people|judge|judge:<name> (default: every source)
    POST /api/annotators owner: {"name", "role"} -> a new token and login link

Untrusted text (prompts, completions, names) only ever travels as JSON and is put on the page
with `textContent` by the page's own script; the Content-Security-Policy allows no inline script
and no other origin. Bodies are bounded (`MAX_BODY`); every refusal is a 4xx with {"error": ...}
and changes nothing. Each submission is committed to disk before its 200 is sent.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rlhf.data.text import broken_text
from rlhf.label.export import ExportError, export_rows
from rlhf.label.quality import project_stats
from rlhf.label.store import SESSION_SECONDS, Annotator, Store, StoreError
from rlhf.label.tasks import AnswerError

MAX_BODY = 1 << 20
"""Largest request body accepted (bytes); a correction or feedback text may be 100,000 characters."""
COOKIE = "rlhf_label"
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,128}")
"""What a token looks like (`secrets.token_urlsafe`): the only text put back into a page."""
ASSETS = {
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/static/label.js": ("label.js", "text/javascript; charset=utf-8"),
    "/static/owner.js": ("owner.js", "text/javascript; charset=utf-8"),
}
PUBLIC = {"/login", "/static/style.css", "/favicon.ico"}
"""The login page, its stylesheet and the (empty) icon hold no data: the only routes open without a token."""
OWNER_ONLY = {"/owner", "/static/owner.js", "/api/stats", "/api/export", "/api/annotators"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no other site sees a URL; this one's own POSTs carry their Origin
    "Cache-Control": "no-store",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _asset(name: str) -> bytes:
    return resources.files("rlhf.assets").joinpath("label").joinpath(name).read_bytes()


LINGER_SECONDS = 2.0
"""How long a closing connection with an unread request body keeps reading it (see `Handler.finish`)."""
LINGER_BYTES = 4 * MAX_BODY
"""How much of an unread request body a closing connection reads and discards at most."""


def _linger(connection: socket.socket) -> None:
    """Half-close `connection` (the response is out) and discard what the client still sends, until it
    closes, `LINGER_SECONDS` pass or `LINGER_BYTES` arrive."""
    deadline, seen = time.monotonic() + LINGER_SECONDS, 0
    try:
        connection.shutdown(socket.SHUT_WR)
        while seen < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            chunk = connection.recv(65536)
            if not chunk:
                return
            seen += len(chunk)
    except OSError:  # the client went away or was too slow: nothing more to do
        return


class LabelServer(ThreadingHTTPServer):
    """Serves one project; `server_address` holds the bound port (pass port 0 for a free one)."""

    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(
        self, store: Store, host: str = "127.0.0.1", port: int = 8000, *, quiet: bool = False,
        session_seconds: float = SESSION_SECONDS, audit: bool = False,
    ) -> None:  # fmt: skip
        self.store = store
        self.quiet = quiet
        self.audit = audit
        """Hand out what the LLM judges were least sure of first (`rlhf.label.queue`)."""
        self.session_seconds = session_seconds
        """How long a login (its cookie and its server-side session) lasts."""
        self.pages = {name: _asset(name) for name in ("login.html", "label.html", "owner.html")}
        self.assets = {path: (_asset(name), kind) for path, (name, kind) in ASSETS.items()}
        self.log_lock = threading.Lock()
        super().__init__((host, port), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (reset, broken pipe, timeout) is one log line, not a
        traceback; anything else is socketserver's report."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            if not self.quiet:
                with self.log_lock:
                    sys.stderr.write(f"{client_address[0]} - connection dropped: {type(error).__name__}\n")
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rlhf-label"
    sys_version = ""
    timeout = 120
    server: LabelServer

    # ------------------------------------------------------------------ plumbing

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        self.body_read = False
        try:
            self._route(method)
        finally:
            self._drain()

    def finish(self) -> None:
        """After the response: a connection closed with the request's body unread (refused as too
        large or unreadable) lingers before it closes, reading and discarding what the client still
        sends, for at most `LINGER_SECONDS` and `LINGER_BYTES`. Closed at once with unread input, the
        socket would be reset, and a client still sending would lose the response (a broken pipe)
        instead of reading the 413 that explains it."""
        super().finish()
        try:
            unread = int(self.headers.get("Content-Length") or 0) > 0 and not self.body_read
        except (AttributeError, ValueError):
            unread = True  # no headers parsed, or a length that is not a number
        if self.close_connection and unread:
            _linger(self.connection)

    def _drain(self) -> None:
        """Read a body the route did not (a refused request's): the next request on this kept-alive
        connection must start at its own first byte. An oversized or unreadable one closes it."""
        if self.body_read or self.close_connection:
            return
        try:
            size = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            size = -1
        if 0 <= size <= MAX_BODY:
            self.rfile.read(size)
        else:
            self.close_connection = True

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        route = ROUTES.get((method, url.path))
        try:
            if not self.path.isprintable():
                raise HttpError(400, "the request path holds control characters")
            if route is None:
                known = any(path == url.path for _, path in ROUTES)
                raise HttpError(405 if known else 404, f"{method} {url.path} is not a route of this app")
            user = self._user()
            if method == "POST" and not self.bearer:
                self._check_same_origin()
            if url.path not in PUBLIC:
                if user is None:
                    if url.path in ("/label", "/owner", "/"):
                        return self._redirect("/login")
                    raise HttpError(401, "log in first: this needs your token")
                if url.path in OWNER_ONLY and user.role != "owner":
                    raise HttpError(403, "only the project's owners may open this")
            route(self, user)
        except HttpError as err:
            self._json({"error": str(err)}, err.status)
        except AnswerError as err:
            self._json({"error": str(err)}, 400)
        except StoreError as err:
            self._store_error(err)
        except ExportError as err:
            self._json({"error": str(err)}, 400)
        except Exception as err:
            fault = self.server.store.fault_of(err)  # a read that met the database's own trouble
            if fault is not None:
                return self._store_error(fault)
            # a bug: answer 500 (the client must not hang) and log it
            self.log_error("internal error on %s: %r", url.path, err)
            traceback.print_exc()
            self.close_connection = True
            self._json({"error": "internal error; the server log has the details"}, 500)

    def _store_error(self, err: StoreError) -> None:
        """The store's refusal, with `Retry-After` when trying again may succeed (a locked database)."""
        self._json({"error": str(err)}, err.status, {"Retry-After": "1"} if err.retry else None)

    def _user(self) -> Annotator | None:
        """The caller: by `Authorization: Bearer <token>` (scripts), or by the session cookie a
        login set (browsers). Sets `bearer` and `session` (the cookie's session id, or None)."""
        header = self.headers.get("Authorization", "")
        self.bearer = header.startswith("Bearer ")
        self.session = None
        if self.bearer:
            return self.server.store.authenticate(header[7:].strip())
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:
            return None
        morsel = cookie.get(COOKIE)
        self.session = morsel.value if morsel else None
        return self.server.store.session_user(self.session)

    def _check_same_origin(self) -> None:
        """Refuse a state-changing request a page of another site made the browser send (CSRF,
        login CSRF included): the browser's `Sec-Fetch-Site`, else `Origin`, else `Referer` must
        name this server (its `Host`). A request with none of them comes from no browser page."""
        host = self.headers.get("Host", "")
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            raise HttpError(403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})")
        for name in ("Origin", "Referer"):
            value = self.headers.get(name)
            if value is None:
                continue
            try:
                netloc = urlsplit(value).netloc
            except ValueError:
                netloc = ""
            if not host or netloc != host:
                raise HttpError(403, f"cross-site request refused ({name} is not this server's {host!r})")
            return

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise HttpError(411, "a request body needs a Content-Length")
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            raise HttpError(400, "Content-Length is not a number") from None
        if size < 0 or size > MAX_BODY:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise HttpError(413, f"request body of {size:,} bytes is over the limit of {MAX_BODY:,}")
        self.body_read = True
        return self.rfile.read(size)

    def _json_body(self) -> dict[str, Any]:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = self._body()
        if kind != "application/json":
            raise HttpError(415, "send the request as application/json")
        try:
            value = json.loads(body.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise HttpError(400, f"the body is not valid JSON: {err}") from None
        except (ValueError, RecursionError) as err:  # NaN, Infinity, 1e400, an integer of 5,000 digits
            raise HttpError(400, f"the body is not usable JSON: {str(err)[:200]}") from None
        if not isinstance(value, dict):
            raise HttpError(400, "the body must be a JSON object")
        broken = broken_text(value)  # it would be stored, then break every page and export showing it
        if broken:
            raise HttpError(400, f"the body's {broken}")
        return value

    def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(value, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", headers)

    def _redirect(self, to: str, headers: dict[str, str] | None = None) -> None:
        self._send(303, b"", "text/plain; charset=utf-8", {"Location": to, **(headers or {})})

    def parse_request(self) -> bool:
        """http.server's parse, refusing HTTP/0.9 (a bare `GET /path` line, no headers: nothing
        of this app works without them, and its replies would carry no status line)."""
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(400, "HTTP/0.9 requests are not served")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors http.server finds itself (a malformed request line, version or header): the app's
        JSON error with its security headers, logged escaped, and the connection closed."""
        self.log_error("code %d, message %s", code, message or "")
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # unparsed: answer with a status line and headers anyway
            self.request_version = "HTTP/1.0"
        reason = message or self.responses.get(code, ("error",))[0]
        body = json.dumps({"error": reason}).encode("utf-8")
        self._send(code, body, "application/json; charset=utf-8", {"Connection": "close"})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        if self.server.quiet:
            return
        # The request line is logged without its query: a login link carries the token there. A
        # request too malformed to parse has no path yet (the line is then the error).
        line = format % args
        path = getattr(self, "path", "")
        line = line.replace(path, urlsplit(path).path) if "?" in path else line
        with self.server.log_lock:
            sys.stderr.write(f"{self.address_string()} - {_printable(line)}\n")

    # ------------------------------------------------------------------ pages

    def page_root(self, user: Annotator) -> None:
        self._redirect("/owner" if user.role == "owner" else "/label")

    def page_login(self, user: Annotator | None) -> None:
        """The login page. A login link (`?token=`) logs in at once when the browser says the user
        opened it (typed, pasted, from another app: `Sec-Fetch-Site: none`) or this site did;
        followed from another site's page (or from a browser that does not say) it only fills in
        the form, so that no page elsewhere can log anyone into an account it chose."""
        token = (self.query.get("token") or [""])[0]
        if token and self.headers.get("Sec-Fetch-Site") in ("none", "same-origin"):
            return self._log_in(token)
        page = self.server.pages["login.html"]
        if self.query.get("failed"):
            page = page.replace(b"<!--status-->", b'<p class="error">That token is not known here.</p>')
        elif token and TOKEN_SHAPE.fullmatch(token):  # only token characters: safe inside the attribute
            page = page.replace(b"<!--status-->", b"<p>Log in with the token of the link you followed?</p>")
            page = page.replace(b'name="token"', f'name="token" value="{token}"'.encode())
        self._send(200, page, "text/html; charset=utf-8")

    def post_login(self, user: Annotator | None) -> None:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = self._body().decode("utf-8", errors="replace")
        if kind == "application/json":
            try:
                token = str(json.loads(body or "{}")["token"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise HttpError(400, 'send {"token": "..."}') from None
        else:
            token = (parse_qs(body).get("token") or [""])[0]
        self._log_in(token.strip())

    def _log_in(self, token: str) -> None:
        """A new server-side session for the token's owner; the cookie holds its id, not the token."""
        user = self.server.store.authenticate(token)
        if user is None:
            return self._redirect("/login?failed=1")
        seconds = int(self.server.session_seconds)
        session = self.server.store.start_session(user.id, seconds)
        cookie = f"{COOKIE}={session}; HttpOnly; SameSite=Lax; Path=/; Max-Age={seconds}"
        self._redirect("/owner" if user.role == "owner" else "/label", {"Set-Cookie": cookie})

    def post_logout(self, user: Annotator) -> None:
        if self.session:
            self.server.store.end_session(self.session)  # the cookie stops working wherever it is
        self._redirect("/login", {"Set-Cookie": f"{COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"})

    def page_label(self, user: Annotator) -> None:
        self._send(200, self.server.pages["label.html"], "text/html; charset=utf-8")

    def page_owner(self, user: Annotator) -> None:
        self._send(200, self.server.pages["owner.html"], "text/html; charset=utf-8")

    def favicon(self, user: Annotator | None) -> None:
        self._send(204, b"", "image/x-icon")

    def static(self, user: Annotator | None) -> None:
        body, kind = self.server.assets[urlsplit(self.path).path]
        self._send(200, body, kind)

    # ------------------------------------------------------------------ annotator API

    def api_me(self, user: Annotator) -> None:
        cfg = self.server.store.config
        self._json(
            {
                "name": user.name,
                "role": user.role,
                "questions": cfg.questions,
                "scale": cfg.scale,
                "scale_step": cfg.scale_step,
                "labels": cfg.labels,
                "instructions": cfg.instructions,
                "progress": self.server.store.progress(user.id),
            }  # fmt: skip
        )

    def api_next(self, user: Annotator) -> None:
        store = self.server.store
        assignment = store.next_assignment(user.id, audit=self.server.audit)
        progress = store.progress(user.id)
        if assignment is None:
            return self._json({"done": True, "progress": progress})
        item = assignment.item
        shown = [item.completions[i] for i in assignment.order]
        self._json(
            {
                "done": False,
                "item": {"id": item.id, "prompt": item.prompt, "completions": shown},
                "progress": progress,
            }
        )

    def api_submit(self, user: Annotator) -> None:
        body = self._json_body()
        item_id = _int_field(body, "item_id")
        seconds = body.get("seconds")
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < 1e9
        ):
            raise HttpError(400, "seconds must be a finite non-negative number (time spent on the item)")
        if "answer" not in body:
            raise HttpError(400, "missing `answer`")
        sid = self.server.store.submit(user.id, item_id, body["answer"], seconds=seconds)
        self._json({"submission": sid, "progress": self.server.store.progress(user.id)})

    def api_skip(self, user: Annotator) -> None:
        item_id = _int_field(self._json_body(), "item_id")
        self.server.store.skip(user.id, item_id)
        self._json({"skipped": item_id})

    def api_undo(self, user: Annotator) -> None:
        self._json_body()
        item_id = self.server.store.undo_last(user.id)
        if item_id is None:
            raise HttpError(409, "nothing to undo: you have no submission")
        self._json({"reopened": item_id, "progress": self.server.store.progress(user.id)})

    # ------------------------------------------------------------------ owner API

    def api_stats(self, user: Annotator) -> None:
        self._json(project_stats(self.server.store))

    def api_export(self, user: Annotator) -> None:
        fmt = (self.query.get("format") or ["pairs"])[0]
        resolve = (self.query.get("resolve") or ["majority"])[0]
        incomplete = (self.query.get("include_incomplete") or ["0"])[0] in ("1", "true", "yes")
        sources = (self.query.get("sources") or [""])[0] or None
        rows, report = export_rows(
            self.server.store, fmt, resolve, include_incomplete=incomplete, sources=sources
        )
        body = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows).encode(
            "utf-8"
        )
        headers = {
            "Content-Disposition": f'attachment; filename="{fmt}-{resolve}.jsonl"',
            "X-Export-Report": json.dumps(report.as_dict(), allow_nan=False),
        }
        self._send(200, body, "application/x-ndjson; charset=utf-8", headers)

    def api_annotators(self, user: Annotator) -> None:
        body = self._json_body()
        name, role = body.get("name"), body.get("role", "annotator")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise HttpError(400, "name must be non-empty text (at most 200 characters)")
        if role not in ("annotator", "owner"):
            raise HttpError(400, "role must be annotator or owner")
        token = self.server.store.add_annotator(name.strip(), role)
        host = self.headers.get("Host", "")
        self._json(
            {"name": name.strip(), "role": role, "token": token, "link": f"http://{host}/login?token={token}"}
        )


def _printable(text: str) -> str:
    """`text` with control and other unprintable characters (escape sequences a terminal would
    obey, bidi overrides) written as `\\xNN` / `\\uNNNN`, so a request cannot forge log lines."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _no_constant(name: str) -> Any:
    """`json.loads`' `parse_constant`: NaN and Infinity are not JSON, and not accepted."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """`json.loads`' `parse_float`: a number too large for a float (1e400) is refused, not infinite."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:40]} is too large a number")
    return value


def _int_field(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(400, f"`{key}` must be an integer")
    return value


# The second argument is the signed-in annotator; routes that need one are only reached with one.
ROUTES: dict[tuple[str, str], Callable[[Handler, Any], None]] = {
    ("GET", "/"): Handler.page_root,
    ("GET", "/login"): Handler.page_login,
    ("GET", "/favicon.ico"): Handler.favicon,
    ("POST", "/login"): Handler.post_login,
    ("POST", "/logout"): Handler.post_logout,
    ("GET", "/label"): Handler.page_label,
    ("GET", "/owner"): Handler.page_owner,
    **{("GET", path): Handler.static for path in ASSETS},
    ("GET", "/api/me"): Handler.api_me,
    ("GET", "/api/next"): Handler.api_next,
    ("POST", "/api/submit"): Handler.api_submit,
    ("POST", "/api/skip"): Handler.api_skip,
    ("POST", "/api/undo"): Handler.api_undo,
    ("GET", "/api/stats"): Handler.api_stats,
    ("GET", "/api/export"): Handler.api_export,
    ("POST", "/api/annotators"): Handler.api_annotators,
}


def serve(
    store: Store,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    on_ready: Callable[[str], None] | None = None,
    quiet: bool = False,
    session_seconds: float = SESSION_SECONDS,
    audit: bool = False,
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); `on_ready(url)` is called once listening. A
    database the server cannot write stops it here, in one line (a `StoreError`)."""
    import signal

    store.ensure_sessions()  # also the start-up check that the database takes writes
    server = LabelServer(store, host, port, quiet=quiet, session_seconds=session_seconds, audit=audit)
    store.set_meta("url", server.url)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if on_ready is not None:
            on_ready(server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
