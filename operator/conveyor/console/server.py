"""Running the console: one uvicorn server on a socket bound here, so `--port 0` can say where it listens."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import sys
from collections.abc import Sequence

from conveyor.console.app import ConsoleApp
from conveyor.console.source import ConsoleSource

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})


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


def serve(source: ConsoleSource, host: str, port: int, also_hosts: Sequence[str] = ()) -> int:
    """Serve until interrupted; prints the console's address first (on stdout, one line, for scripts).

    On loopback only requests naming a loopback host are answered; elsewhere any host, unless `also_hosts`
    names the ones (besides loopback's) to answer to, e.g. a Service's names behind a port-forward."""
    try:
        import uvicorn  # noqa: PLC0415  # the HTTP stack loads only for `conveyor ui`
    except ImportError:
        print("error: `conveyor ui` needs uvicorn: pip install 'conveyor[server]'", file=sys.stderr)
        return 1
    sock = bind(host, port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = frozenset(h.lower() for h in also_hosts)
    app = ConsoleApp(source, LOOPBACK_NAMES | names if loopback(host) or names else None)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    print(f"Conveyor console for {source.description} on {url_of(sock)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn has shut down cleanly and re-raises Ctrl-C
        uvicorn.Server(config).run(sockets=[sock])
    return 0
