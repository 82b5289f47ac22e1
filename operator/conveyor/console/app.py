"""The console's ASGI application: its HTML pages, their static front end, and one small JSON API.

No web framework, like the model server's REST adapter (serving/rest.py): routes are matched on the
raw path split once, each segment unquoted, so a run id with spaces or `<` round-trips. Pages are fixed
shells and the front end puts every value in with `textContent`; the Content-Security-Policy allows only
this origin's own script and style, so even a value that slipped through unescaped could run nothing.

Reading is GET and HEAD. The actions (`--actions`: cancel, rerun, approve, reject) are POST only, each
checked against the session's CSRF token (a synchronizer token: an HMAC of the session cookie under a
key this process drew, put in each page and sent back in a header), so a page elsewhere that makes the
browser POST here, cookie and all, is refused with a 403 and changes nothing. With an actions token
(`--actions-token-file`; required off loopback) each POST must also carry `Authorization: Bearer <token>`,
compared in constant time, or it is refused with a 401: a session and its CSRF token come to anyone who
loads a page, the bearer token only to those it was given to. Without `--actions` every POST is refused
(405: the console is read-only).

    GET /                       runs list          GET /api/runs?pipeline=&phase=&since=&until=&page=&per=
    GET /runs/<run>             one run            GET /api/runs/<run>
    GET /compare?run=a&run=b    runs side by side  GET /api/runs/<run>/logs/<key>/<attempt>
    GET /lineage                models             GET /api/runs/<run>/plots/<step>/<index>
    GET /lineage/<digest>       an artifact's      GET /api/compare?run=a&run=b
                                lineage            GET /api/lineage, /api/lineage/<digest>
    GET /pipelines              pipelines          GET /api/pipelines
    GET /pipelines/<name>       one pipeline       GET /api/pipelines/<name>
    GET /deployments            model deployments  GET /api/deployments
    GET /deployments/<md>       one of them        GET /api/deployments/<md>
    GET /static/<file>                             GET /healthz
    POST /api/runs/<run>/cancel, /api/runs/<run>/rerun, /api/runs/<run>/steps/<step>/approve|reject
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote

from conveyor.console.actions import Actions, Refused
from conveyor.console.source import ConsoleSource, NotFound, Unavailable
from conveyor.console.views import BadQuery, compare_view, parse_query, runs_page
from conveyor.core.redact import redact_text
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
<meta name="conveyor-csrf" content="{token}">
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body data-page="{page}">
<header><a class="home" href="/">Conveyor</a>
<nav aria-label="sections"><a href="/">Runs</a> <a href="/pipelines">Pipelines</a>
<a href="/deployments">Models</a> <a href="/lineage">Lineage</a></nav>
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


SESSION_COOKIE = "conveyor_session"
CSRF_HEADER = b"x-conveyor-csrf"
UNAUTHORIZED = (
    "refused: this console's actions need its actions token (Authorization: Bearer <token>, the contents of "
    "the file given with --actions-token-file; the chart: the Secret console.actions.tokenSecret); "
    "it was missing or wrong"
)
_SESSION = re.compile(r"^[0-9a-f]{64}$")
FORBIDDEN_CSRF = (
    "refused: this request carries no valid CSRF token for its session (a form or script on another page "
    "cannot act here); reload the console and use its buttons"
)


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

    def __init__(
        self,
        source: ConsoleSource,
        allowed_hosts: frozenset[str] | None = None,
        actions: Actions | None = None,
        actions_token: bytes | None = None,
    ) -> None:
        """`allowed_hosts`: the host names a request may name (any port); None accepts any. On loopback this
        refuses a page elsewhere that re-points its own name at 127.0.0.1 (DNS rebinding) to read the runs.
        `actions`: what POSTs may do; None (the default) refuses every one. `actions_token`: the bearer token
        every POST must carry besides its CSRF token (None: none is asked for, loopback only)."""
        self.source = source
        self.allowed_hosts = allowed_hosts
        self.actions = actions
        self.actions_token = actions_token
        self._key = secrets.token_bytes(32)  # drawn per process: tokens die with it, nothing to keep

    def token(self, session: str) -> str:
        """The CSRF token of a session: an HMAC of its id, so any worker thread can check it without a table."""
        return hmac.new(self._key, session.encode(), hashlib.sha256).hexdigest()

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
        elif method == "POST" and self.actions is None:
            response = _error(
                405,
                "the console is read-only: actions are off "
                "(start it with --actions; the chart: console.actions.enabled)",
            )
            response.extra.append((b"allow", b"GET, HEAD"))
        elif method == "POST":
            response = self._forbidden(scope) or self._unauthorized(scope) or await self._act(scope)
        elif method not in ("GET", "HEAD"):
            response = _error(405, "the console reads with GET and acts with POST only")
            response.extra.append((b"allow", b"GET, HEAD, POST"))
        else:
            try:
                response = await asyncio.to_thread(self.route, scope)
            except Exception as e:  # a bad record or a store error must not take the console down
                log.exception("console request failed: %s", scope.get("path"))
                response = _error(500, f"internal error ({type(e).__name__}); see the console's log")
            if response.content_type.startswith(b"text/html"):
                response = self._with_session(scope, response)
        etag = None
        if response.status == 200 and response.content_type == b"application/json" and method != "POST":
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

    # ------------------------------------------------------------ sessions and CSRF

    def _with_session(self, scope: Scope, response: Response) -> Response:
        """A page with its session's CSRF token in it; a new session (cookie) when the request had none."""
        session = _cookie(scope, SESSION_COOKIE)
        if session is None or not _SESSION.match(session):
            session = secrets.token_hex(32)
            cookie = f"{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict"
            response.extra.append((b"set-cookie", cookie.encode()))
        token = self.token(session) if self.actions is not None else ""
        response.body = response.body.replace(b"{token}", token.encode(), 1)
        return response

    def _forbidden(self, scope: Scope) -> Response | None:
        """Why a POST is refused (403), or None: a foreign Origin, no session, or a missing or wrong token."""
        origin = _header(scope, b"origin")
        host = _header(scope, b"host")
        if origin is not None and host is not None and origin.split(b"://", 1)[-1].lower() != host.lower():
            return _error(403, "refused: the request comes from another site's page")
        session = _cookie(scope, SESSION_COOKIE)
        sent = _header(scope, CSRF_HEADER) or b""  # bytes: any octet compares, none raises
        if (
            session is None
            or not _SESSION.match(session)
            or not sent
            or not hmac.compare_digest(sent, self.token(session).encode())
        ):
            return _error(403, FORBIDDEN_CSRF)
        return None

    def _unauthorized(self, scope: Scope) -> Response | None:
        """A 401 when the console has an actions token and the request does not carry it; else None."""
        if self.actions_token is None:
            return None
        scheme, _, sent = (_header(scope, b"authorization") or b"").strip().partition(b" ")
        if scheme.lower() == b"bearer" and sent.strip() and hmac.compare_digest(sent.strip(), self.actions_token):
            return None
        response = _error(401, UNAUTHORIZED)
        response.extra.append((b"www-authenticate", b'Bearer realm="conveyor console actions"'))
        return response

    async def _act(self, scope: Scope) -> Response:
        try:
            return await asyncio.to_thread(self._action, scope)
        except Exception as e:  # the API server refusing the console's ServiceAccount, say
            # redacted: an ApiException's text carries the API server's headers and body
            log.warning("console action failed: %s: %s", scope.get("path"), redact_text(str(e)))
            status = getattr(e, "status", None)
            status = status if isinstance(status, int) else None
            what = f"{status} {getattr(e, 'reason', '')}".strip() if status else type(e).__name__
            # the API server's 404 (gone) and 409 (conflict) say what happened; another 4xx is a refusal
            code = 502 if not status or status >= 500 else status if status in (404, 409) else 403
            return _error(code, redact_text(f"the cluster refused: {what}"))

    def _action(self, scope: Scope) -> Response:
        assert self.actions is not None
        parts = _parts(scope)
        try:
            match parts:
                case ["api", "runs", run, "cancel"]:
                    return _json(self.actions.cancel(run))
                case ["api", "runs", run, "rerun"]:
                    return _json(self.actions.rerun(run))
                case ["api", "runs", run, "steps", step, ("approve" | "reject") as verb]:
                    return _json(self.actions.decide(run, step, approve=verb == "approve"))
            return _error(404, "no such action")
        except NotFound as e:
            return _error(404, str(e))
        except Refused as e:
            return _error(409, redact_text(str(e)))
        except (Unavailable, StoreUnavailable) as e:
            return _error(503, redact_text(str(e)))

    def _host_allowed(self, scope: Scope) -> bool:
        if self.allowed_hosts is None:
            return True
        host = (_header(scope, b"host") or b"").decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host  # [::1]:8420 → [::1]
        return name in self.allowed_hosts

    def route(self, scope: Scope) -> Response:
        parts = _parts(scope)
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
            case ["deployments"]:
                return _page("deployments")
            case ["deployments", _]:
                return _page("deployment")
            case ["static", name]:
                return _static(name)
            case ["healthz"]:
                return _json({"ok": True})
            case ["favicon.ico"]:
                return Response(204, b"", b"image/x-icon")
            case ["api", "source"]:
                return _json(
                    {
                        "description": self.source.description,
                        "actions": self.actions is not None,
                        "actionsToken": self.actions is not None and self.actions_token is not None,
                    }
                )
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
            case ["api", "deployments"]:
                return _json(self.source.deployments())
            case ["api", "deployments", deployment]:
                return _json(self.source.deployment(deployment))
            case ["api", "compare"]:
                runs = list(dict.fromkeys(query.get("run", [])))
                if len(runs) < 2:
                    raise BadQuery("run: give at least two runs to compare (run=A&run=B)")
                return _json(compare_view(self.source.records(runs)))
        raise NotFound("no such page")


def _page(name: str) -> Response:
    """A page shell; `{token}` in it becomes the session's CSRF token (ConsoleApp._with_session)."""
    return Response(200, PAGE.replace("{page}", name).encode(), b"text/html; charset=utf-8")


def _parts(scope: Scope) -> list[str]:
    raw = scope.get("raw_path") or scope["path"].encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    return [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key != b"cookie":
            continue
        for part in bytes(value).decode("latin-1").split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                return v
    return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None
