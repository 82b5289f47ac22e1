"""The console's ASGI application: its HTML pages, their static front end, and one small JSON API.

No web framework, like the model server's REST adapter (serving/rest.py): routes are matched on the
raw path split once, each segment unquoted, so a run id with spaces or `<` round-trips. Read-only: any
method but GET and HEAD is refused, so there is nothing to forge a request for. Pages are fixed shells
and the front end puts every value in with `textContent`; the Content-Security-Policy allows only this
origin's own script and style, so even a value that slipped through unescaped could run nothing.

    GET /                       runs list          GET /api/runs?pipeline=&phase=&since=&until=&page=&per=
    GET /runs/<run>             one run            GET /api/runs/<run>
    GET /compare?run=a&run=b    runs side by side  GET /api/runs/<run>/logs/<key>/<attempt>
    GET /lineage                models             GET /api/runs/<run>/plots/<step>/<index>
    GET /lineage/<digest>       an artifact's      GET /api/compare?run=a&run=b
                                lineage            GET /api/lineage, /api/lineage/<digest>
    GET /pipelines              pipelines          GET /api/pipelines
    GET /pipelines/<name>       one pipeline       GET /api/pipelines/<name>
    GET /static/<file>                             GET /healthz
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote

from conveyor.console.redact import redact_text
from conveyor.console.source import ConsoleSource, NotFound, Unavailable
from conveyor.console.views import BadQuery, compare_view, parse_query, runs_page
from conveyor.storage.store import StoreUnavailable

log = logging.getLogger("conveyor.console")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
STATIC_TYPES = {".js": b"text/javascript; charset=utf-8", ".css": b"text/css; charset=utf-8"}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Conveyor</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body data-page="{page}">
<header><a class="home" href="/">Conveyor</a>
<nav aria-label="sections"><a href="/">Runs</a> <a href="/pipelines">Pipelines</a> <a href="/lineage">Lineage</a></nav>
<span class="where" id="where"></span>
<span class="status" id="status" role="status"></span></header>
<main id="app" aria-live="polite"><p class="loading">Loading…</p></main>
</body>
</html>
"""


class Response:
    __slots__ = ("body", "content_type", "extra", "status")

    def __init__(self, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None):
        self.status, self.body, self.content_type, self.extra = status, body, content_type, extra or []


def _json(document: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(document, separators=(",", ":")).encode(), b"application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _page(name: str) -> Response:
    return Response(200, PAGE.format(page=name).encode(), b"text/html; charset=utf-8")


def _static(name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in STATIC_TYPES or "/" in name or name.startswith("."):
        return _error(404, f"no static file {name!r}")
    try:
        data = resources.files("conveyor.console").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return _error(404, f"no static file {name!r}")
    return Response(200, data, STATIC_TYPES[suffix])


class ConsoleApp:
    """The ASGI application over one source. Source calls read files, so they run in a worker thread."""

    def __init__(self, source: ConsoleSource, allowed_hosts: frozenset[str] | None = None) -> None:
        """`allowed_hosts`: the host names a request may name (any port); None accepts any. On loopback this
        refuses a page elsewhere that re-points its own name at 127.0.0.1 (DNS rebinding) to read the runs."""
        self.source = source
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method = scope["method"]
        if not self._host_allowed(scope):
            response = _error(421, "this console answers only to the address it was started on")
        elif method not in ("GET", "HEAD"):
            response = _error(405, "the console is read-only: only GET and HEAD")
            response.extra.append((b"allow", b"GET, HEAD"))
        else:
            try:
                response = await asyncio.to_thread(self.route, scope)
            except Exception as e:  # a bad record or a store error must not take the console down
                log.exception("console request failed: %s", scope.get("path"))
                response = _error(500, f"internal error ({type(e).__name__}); see the console's log")
        etag = None
        if response.status == 200 and response.content_type == b"application/json":
            etag = b'"' + hashlib.sha256(response.body).hexdigest()[:32].encode() + b'"'
            response.extra.append((b"etag", etag))
            if _header(scope, b"if-none-match") == etag:
                response = Response(304, b"", b"application/json", [(b"etag", etag)])
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            *SECURITY_HEADERS,
            *response.extra,
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else response.body})

    def _host_allowed(self, scope: Scope) -> bool:
        if self.allowed_hosts is None:
            return True
        host = (_header(scope, b"host") or b"").decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host  # [::1]:8420 → [::1]
        return name in self.allowed_hosts

    def route(self, scope: Scope) -> Response:
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        try:
            return self._route(parts, query)
        except NotFound as e:
            return _error(404, str(e))
        except BadQuery as e:
            return _error(400, str(e))
        except (Unavailable, StoreUnavailable) as e:  # the API server or the store, not the console: say which
            log.warning("console request failed: %s: %s", scope.get("path"), e)
            return _error(503, redact_text(str(e)))

    def _route(self, parts: list[str], query: dict[str, list[str]]) -> Response:
        match parts:
            case []:
                return _page("runs")
            case ["runs", _]:
                return _page("run")
            case ["compare"]:
                return _page("compare")
            case ["lineage"] | ["lineage", _]:
                return _page("lineage")
            case ["pipelines"]:
                return _page("pipelines")
            case ["pipelines", _]:
                return _page("pipeline")
            case ["static", name]:
                return _static(name)
            case ["healthz"]:
                return _json({"ok": True})
            case ["favicon.ico"]:
                return Response(204, b"", b"image/x-icon")
            case ["api", "source"]:
                return _json({"description": self.source.description})
            case ["api", "runs"]:
                return _json(runs_page(self.source.rows(), parse_query(query)))
            case ["api", "runs", run]:
                return _json(self.source.run(run))
            case ["api", "runs", run, "logs", key, attempt] if attempt.isdigit():
                text = self.source.log(run, key, int(attempt))
                return _json({"key": key, "attempt": int(attempt), "text": text})
            case ["api", "runs", run, "plots", step, index] if index.isdigit():
                return Response(200, self.source.plot_png(run, step, int(index)), b"image/png")
            case ["api", "lineage"]:
                return _json(self.source.models())
            case ["api", "lineage", digest]:
                return _json(self.source.lineage(digest))
            case ["api", "pipelines"]:
                return _json(self.source.pipelines())
            case ["api", "pipelines", name]:
                return _json(self.source.pipeline(name))
            case ["api", "compare"]:
                runs = list(dict.fromkeys(query.get("run", [])))
                if len(runs) < 2:
                    raise BadQuery("run: give at least two runs to compare (run=A&run=B)")
                return _json(compare_view(self.source.records(runs)))
        raise NotFound("no such page")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None
