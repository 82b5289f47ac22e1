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
import json
import os
import signal
import sys
import threading
import time
from types import FrameType

from kubernetes import client as k8s_client

from testenv import stack
from testenv.controlplane import ControlPlane
from testenv.crds import CRD_DIR, apply_crds, crd_files
from testenv.minio import S3Endpoint
from testenv.nodeagent import NodeAgentProcess
from testenv.processes import ServerProcess, free_port


def _operator_entry() -> tuple[bool, str]:
    """Whether ``python -m conveyor.controller`` has a main() to run, and what was found."""
    for name in ("conveyor.controller.__main__", "conveyor.controller"):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            return False, f"{name} cannot be imported: {exc}"
        if callable(getattr(module, "main", None)):
            return True, f"{name}.main"
    return False, "conveyor.controller has no main() yet"


def _print_access(cp: ControlPlane, s3: S3Endpoint, agent: NodeAgentProcess) -> None:
    print(f"""
Conveyor dev cluster is up (control plane started in {cp.startup_seconds:.1f}s).

  kubeconfig:  {cp.kubeconfig}
  export KUBECONFIG={cp.kubeconfig}
  kubectl:     {cp.binaries.kubectl}
  logs:        {cp.log_dir}
  pod dirs:    {agent.pods_dir}   (container logs and termination messages)

  MinIO:       {s3.endpoint}  bucket={s3.bucket}  (Secret default/conveyor-artifacts holds the keys)
  export AWS_ENDPOINT_URL={s3.endpoint} AWS_ACCESS_KEY_ID={s3.access_key} \\
         AWS_SECRET_ACCESS_KEY={s3.secret_key} AWS_DEFAULT_REGION={s3.region}
""")
    sys.stdout.flush()


def operator_environment(cp: ControlPlane, s3: S3Endpoint) -> dict[str, str]:
    """The settings the operator reads (conveyor.controller.config), pointed at this cluster."""
    return {
        **os.environ,
        "KUBECONFIG": str(cp.kubeconfig),
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": s3.region,
        "CONVEYOR_S3_ENDPOINT": s3.endpoint,
        "CONVEYOR_S3_BUCKET": s3.bucket,
        # Images are ignored by the test node agent: steps run with this interpreter.
        "CONVEYOR_STEP_COMMAND": json.dumps([sys.executable, "-m", "conveyor.runtime"]),
        "CONVEYOR_METRICS_PORT": str(free_port()),
        "CONVEYOR_HEALTH_PORT": str(free_port()),
    }


def _start_operator(cp: ControlPlane, s3: S3Endpoint) -> ServerProcess:
    env = operator_environment(cp, s3)
    print(f"  operator metrics: http://127.0.0.1:{env['CONVEYOR_METRICS_PORT']}/metrics")
    return ServerProcess(
        "operator",
        [sys.executable, "-m", "conveyor.controller", "--standalone"],
        cp.log_dir / "operator.log",
        env=env,
    ).start()


def _create_artifact_secret(cp: ControlPlane, s3: S3Endpoint, namespace: str) -> None:
    """The Secret step pods read their S3 credentials from (the operator's default name)."""
    with cp.api_client() as api:
        try:
            k8s_client.CoreV1Api(api).create_namespaced_secret(
                namespace,
                {
                    "metadata": {"name": "conveyor-artifacts"},
                    "stringData": {"accessKey": s3.access_key, "secretKey": s3.secret_key},
                },
            )
        except k8s_client.ApiException as exc:
            if exc.status != 409:
                raise


def _follow(proc: ServerProcess, offset: int) -> int:
    """Print what ``proc`` logged since ``offset``; returns the new offset."""
    with proc.log_path.open("rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    if chunk:
        sys.stdout.write(chunk.decode("utf-8", "replace"))
        sys.stdout.flush()
    return offset + len(chunk)


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
        _create_artifact_secret(cp, s3, "default")
        try:
            names = apply_crds(cp, crd_files())
            print(f"CRDs established: {', '.join(names)}")
        except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
            print(f"CRDs from {CRD_DIR} NOT installed: {exc}", file=sys.stderr)
        _print_access(cp, s3, agent)

        runnable, what = _operator_entry()
        operator: ServerProcess | None = None
        try:
            if not runnable:
                print(f"The operator is not available yet ({what}); the cluster stays up. Ctrl-C to stop.")
            else:
                operator = _start_operator(cp, s3)
                print(f"Operator running ({what}), log: {operator.log_path}. Ctrl-C to stop.")
            printed = 0
            while not stop.wait(1.0):
                agent.process.check_running()
                if operator is not None:
                    printed = _follow(operator, printed)  # the operator's log in the foreground
                    operator.check_running()
        except KeyboardInterrupt:
            print("\nStopping the dev cluster...")
        finally:
            if operator is not None:
                operator.stop(grace=10)
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
