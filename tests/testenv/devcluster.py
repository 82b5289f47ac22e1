"""A local development cluster in the foreground: ``python -m testenv.devcluster`` (from tests/).

Test harness code. Starts the same stack the integration tests use (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, the test node agent, MinIO), applies crds/, prints
how to reach it, then runs the operator (``conveyor.controller.main``) if it exists yet.
Ctrl-C tears everything down.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from testenv import stack
from testenv.crds import CRD_DIR, apply_crds, crd_files


def _operator_main() -> tuple[Callable[[], Any] | None, str]:
    """conveyor.controller.main if the operator provides one, else None and why not."""
    try:
        module = importlib.import_module("conveyor.controller")
    except ImportError as exc:
        return None, f"conveyor.controller cannot be imported: {exc}"
    main = getattr(module, "main", None)
    if not callable(main):
        return None, "conveyor.controller has no main() yet"
    return main, "conveyor.controller.main"


def _print_access(cp: Any, s3: Any, agent: Any) -> None:
    print(f"""
Conveyor dev cluster is up (control plane started in {cp.startup_seconds:.1f}s).

  kubeconfig:  {cp.kubeconfig}
  export KUBECONFIG={cp.kubeconfig}
  kubectl:     {cp.binaries.kubectl}
  logs:        {cp.log_dir}
  pod dirs:    {agent.pods_dir}   (container logs and termination messages)

  MinIO:       {s3.endpoint}  bucket={s3.bucket}
  export AWS_ENDPOINT_URL={s3.endpoint} AWS_ACCESS_KEY_ID={s3.access_key} \\
         AWS_SECRET_ACCESS_KEY={s3.secret_key} AWS_DEFAULT_REGION={s3.region}
""")
    sys.stdout.flush()


def run(keep: bool) -> int:
    """Bring the stack up, run the operator or idle, tear down on Ctrl-C/SIGTERM."""
    if keep:
        os.environ["CONVEYOR_TESTENV_KEEP"] = "1"
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored (background jobs)
    with contextlib.ExitStack() as resources:
        cp = resources.enter_context(stack.control_plane())
        bridge = resources.enter_context(stack.pod_bridge())
        server = resources.enter_context(stack.minio(cp, bridge))
        agent = resources.enter_context(stack.node_agent(cp, bridge))
        s3 = server.endpoint
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": s3.endpoint,
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                "AWS_DEFAULT_REGION": s3.region,
                "CONVEYOR_S3_BUCKET": s3.bucket,
            }
        )
        try:
            names = apply_crds(cp, crd_files())
            print(f"CRDs established: {', '.join(names)}")
        except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
            print(f"CRDs from {CRD_DIR} NOT installed: {exc}", file=sys.stderr)
        _print_access(cp, s3, agent)

        main, what = _operator_main()
        try:
            if main is None:
                print(f"The operator is not available yet ({what}); the cluster stays up. Ctrl-C to stop.")
                while not stop.wait(1.0):
                    agent.process.check_running()
            else:
                print(f"Running the operator: {what}() — Ctrl-C to stop.")
                sys.argv = ["conveyor.controller"]  # the operator parses its own (empty) command line
                main()
        except KeyboardInterrupt:
            print("\nStopping the dev cluster...")
        started = time.monotonic()
    print(f"Stopped in {time.monotonic() - started:.1f}s.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m testenv.devcluster", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep logs, certs and pod dirs after stopping")
    args = parser.parse_args(argv)
    return run(args.keep)


if __name__ == "__main__":
    sys.exit(main())
