"""`conveyor ui`: the web console over the local runner's state directory (read-only)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED = 0, 1


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0: any free one), got {value}")
    return value


def cmd_ui(args: argparse.Namespace) -> int:
    from conveyor.console.server import loopback, serve  # noqa: PLC0415
    from conveyor.console.source import LocalSource  # noqa: PLC0415

    state_dir: Path = args.state_dir
    if not state_dir.is_dir():
        print(f"error: {state_dir} is not a directory: run `conveyor run` first, or give --state-dir", file=sys.stderr)
        return EXIT_FAILED
    if not loopback(args.host):
        print(
            f"warning: serving on {args.host}: anyone who reaches it reads every run and log (no login yet)",
            file=sys.stderr,
        )
    return serve(LocalSource(state_dir), args.host, args.port)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ui = sub.add_parser(
        "ui", help="the web console: runs, DAGs, logs, comparisons, lineage and pipelines in the browser (read-only)"
    )
    ui.add_argument("--state-dir", type=Path, default=Path(".conveyor"), help="the local runner's state")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    ui.add_argument("--port", type=_port, default=8420, help="port (default 8420; 0: any free port)")
    ui.set_defaults(func=cmd_ui)
