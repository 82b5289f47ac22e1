"""`conveyor ui`: the web console over the local runner's state directory or a cluster (read-only unless
`--actions`: then, on a cluster, cancel, rerun, approve and reject, as the CLI does them).

Locally it reads `--state-dir`. With `--kubeconfig` (and `--context`) or `--in-cluster` it reads the
cluster's Runs (every namespace, or those given with `-n`) and the operator's artifact store for the
records and archived logs (`--s3-endpoint`, `--bucket`, `--prefix`; credentials from AWS_* variables,
as `conveyor logs` reads them).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0: any free one), got {value}")
    return value


def _cluster_source(args: argparse.Namespace) -> Any:
    """The cluster source, or an error message (str) saying what is missing."""
    from conveyor.console.cluster import ClusterSource  # noqa: PLC0415
    from conveyor.kube.reader import ClusterReader, reader_config  # noqa: PLC0415
    from conveyor.storage.s3 import S3Store  # noqa: PLC0415

    if args.in_cluster and (args.kubeconfig or args.context):
        return "--in-cluster reads the pod's own credentials: give it without --kubeconfig and --context"
    if args.kubeconfig is not None and not args.kubeconfig.is_file():
        return f"{args.kubeconfig} is not a file: give the kubeconfig with --kubeconfig"
    try:
        settings = reader_config(args.kubeconfig, args.context, args.in_cluster)
    except Exception as e:  # the client's ConfigException, or a kubeconfig that does not parse
        return f"cannot load the cluster's credentials: {e}"
    store = S3Store(args.bucket, args.prefix, args.s3_endpoint or None)
    source = ClusterSource(ClusterReader(settings), store, args.namespace or ())
    if args.actions:
        from conveyor.console.actions import ClusterActions  # noqa: PLC0415
        from conveyor.kube.cluster import Cluster  # noqa: PLC0415
        from conveyor.kube.reader import writer_client  # noqa: PLC0415

        writer = Cluster(writer_client(settings))
        args.console_actions = ClusterActions(writer, store, tuple(args.namespace or ()), source.changed)
    return source


def _actions_token(args: argparse.Namespace) -> bytes | str | None:
    """The actions token read from --actions-token-file (bytes), None when none is given, or an error (str).

    Never from the command line (a process's arguments are readable by others) and never logged."""
    from conveyor.console.server import loopback  # noqa: PLC0415

    path: Path | None = args.actions_token_file
    if path is not None and not args.actions:
        return "--actions-token-file is the actions' token: give it with --actions"
    if not args.actions:
        return None
    if not loopback(args.host):
        if path is None:
            return (
                f"--actions on {args.host} (not loopback) needs --actions-token-file: anyone who reaches the "
                "console could otherwise cancel, rerun and approve Runs"
            )
        if not args.allow_host:
            return (
                f"--actions on {args.host} (not loopback) needs --allow-host naming the hosts it answers to: "
                "a console that answers any Host can be driven by a page elsewhere (DNS rebinding)"
            )
    if path is None:
        return None
    try:
        token = path.read_bytes().strip()
    except OSError as e:
        return f"cannot read the actions token file {path}: {e.strerror or type(e).__name__}"
    if len(token) < 16:
        return f"the actions token file {path} holds {'no' if not token else 'too short a'} token (16 bytes at least)"
    if any(b < 0x21 or b > 0x7E for b in token):
        return f"the actions token in {path} must be printable ASCII without spaces (it is sent as a bearer token)"
    return token


def cmd_ui(args: argparse.Namespace) -> int:
    from conveyor.console.server import loopback, serve  # noqa: PLC0415
    from conveyor.console.source import LocalSource  # noqa: PLC0415

    token = _actions_token(args)
    if isinstance(token, str):
        print(f"error: {token}", file=sys.stderr)
        return EXIT_FAILED
    source: Any
    if args.kubeconfig is not None or args.context or args.in_cluster:
        source = _cluster_source(args)
        if isinstance(source, str):
            print(f"error: {source}", file=sys.stderr)
            return EXIT_FAILED
    else:
        state_dir: Path = args.state_dir
        if not state_dir.is_dir():
            print(
                f"error: {state_dir} is not a directory: run `conveyor run` first, give --state-dir, "
                "or read a cluster with --kubeconfig",
                file=sys.stderr,
            )
            return EXIT_FAILED
        if args.actions:
            print("error: --actions act on a cluster's Runs: give --kubeconfig or --in-cluster", file=sys.stderr)
            return EXIT_FAILED
        source = LocalSource(state_dir)
    if not loopback(args.host) and not args.allow_host:
        print(
            f"warning: serving on {args.host}: anyone who reaches it reads every run and log (no login yet)",
            file=sys.stderr,
        )
    return serve(source, args.host, args.port, args.allow_host, getattr(args, "console_actions", None), token)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ui = sub.add_parser(
        "ui",
        help="the web console: runs, DAGs, logs, comparisons, lineage, pipelines and models in the browser "
        "(read-only unless --actions), "
        "over the local state or a cluster",
    )
    ui.add_argument("--state-dir", type=Path, default=Path(".conveyor"), help="the local runner's state")
    ui.add_argument("--kubeconfig", type=Path, help="read a cluster's Runs with this kubeconfig instead")
    ui.add_argument("--context", help="the kubeconfig's context (default: its current one)")
    ui.add_argument("--in-cluster", action="store_true", help="read the cluster this pod runs in (the chart's way)")
    ui.add_argument(
        "-n", "--namespace", action="append", help="only this namespace's Runs (repeatable; default: every one)"
    )
    ui.add_argument(
        "--s3-endpoint",
        default=os.environ.get("CONVEYOR_S3_ENDPOINT"),
        help="the operator's artifact store (default: $CONVEYOR_S3_ENDPOINT); credentials from AWS_* variables",
    )
    ui.add_argument(
        "--bucket", default=os.environ.get("CONVEYOR_S3_BUCKET") or "conveyor", help="(default: $CONVEYOR_S3_BUCKET)"
    )
    ui.add_argument("--prefix", default=os.environ.get("CONVEYOR_S3_PREFIX", ""), help="(default: $CONVEYOR_S3_PREFIX)")
    ui.add_argument(
        "--allow-host",
        action="append",
        default=[],
        help="also answer requests naming this host (repeatable), e.g. the console's Service name",
    )
    ui.add_argument(
        "--actions",
        action="store_true",
        help="let the console cancel and rerun Runs and approve or reject waiting steps (cluster; off by default)",
    )
    ui.add_argument(
        "--actions-token-file",
        type=Path,
        help="with --actions: a file holding the token every action must carry (Authorization: Bearer); "
        "required unless --host is loopback",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    ui.add_argument("--port", type=_port, default=8420, help="port (default 8420; 0: any free port)")
    ui.set_defaults(func=cmd_ui)
