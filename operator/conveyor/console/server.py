"""Running the console: one server on a socket bound here, so `--port 0` can say where it listens.

uvicorn when it is installed (the `server` extra); else the standard library's threading HTTP server
driving the same ASGI application, one request per thread. The operator image carries no uvicorn,
and the chart runs the console from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import MutableMapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from conveyor.console.actions import Actions
from conveyor.console.app import ConsoleApp
from conveyor.console.source import ConsoleSource

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
MAX_BODY = 64 * 1024


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(
    source: ConsoleSource,
    host: str,
    port: int,
    also_hosts: Sequence[str] = (),
    actions: Actions | None = None,
    actions_token: bytes | None = None,
) -> int:
    """Serve until interrupted; prints the console's address first (on stdout, one line, for scripts).

    On loopback only requests naming a loopback host are answered; elsewhere any host, unless `also_hosts`
    names the ones (besides loopback's) to answer to, e.g. a Service's names behind a port-forward."""
    sock = bind(host, port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = frozenset(h.lower() for h in also_hosts)
    app = ConsoleApp(source, LOOPBACK_NAMES | names if loopback(host) or names else None, actions, actions_token)
    try:
        import uvicorn  # noqa: PLC0415  # the HTTP stack loads only for `conveyor ui`
    except ImportError:
        print(f"Conveyor console for {source.description} on {url_of(sock)}", flush=True)
        with contextlib.suppress(KeyboardInterrupt), threaded_server(app, sock) as server:
            server.serve_forever()
        return 0
    print(f"Conveyor console for {source.description} on {url_of(sock)}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn has shut down cleanly and re-raises Ctrl-C
        uvicorn.Server(config).run(sockets=[sock])
    return 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: ConsoleApp


class _Handler(BaseHTTPRequestHandler):
    """One HTTP/1.1 request handed to the ASGI application. The console's requests need no body: one that
    comes anyway (up to 64 KiB) is read and handed on, so the connection stays in step."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def _asgi(self) -> None:
        path, _, query = self.path.partition("?")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self.command,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()],
            "client": self.client_address[:2],
            "server": self.server.server_address[:2],
        }
        sent: list[dict[str, Any]] = []
        declared = (self.headers.get("content-length") or "0").strip()
        length = int(declared) if declared.isascii() and declared.isdigit() else -1  # no sign, no "1_0"
        if length < 0:
            self.send_error(400, "malformed Content-Length")
            self.close_connection = True
            return
        if length > MAX_BODY:
            self.send_error(413, "the console takes no request body")
            self.close_connection = True
            return
        body = self.rfile.read(length) if length > 0 else b""

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        asyncio.run(self.server.app(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        self.send_response_only(int(start["status"]))
        for key, value in start.get("headers", []):
            self.send_header(key.decode("latin-1"), value.decode("latin-1"))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _asgi  # noqa: N815  # the stdlib's names

    def log_message(self, format: str, *args: Any) -> None:  # no access log, as with uvicorn
        return


@contextlib.contextmanager
def threaded_server(app: ConsoleApp, sock: socket.socket) -> Any:
    """The standard library's threading HTTP server on the bound socket `sock`, serving `app`."""
    server = _Server(sock.getsockname()[:2], _Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.app = app
    try:
        yield server
    finally:
        server.server_close()
