"""A tiny kubelet for integration tests: runs pods bound to its Node as local processes.

Test harness code, not product code. It predates the real node: the container tier
(tests/containers) runs the images on a real kubelet with containerd (kubeletnode.py), and proves
the container contract there. This agent still serves the integration, e2e, chaos, security and
console-over-a-cluster tiers, which test the operator's decisions rather than containers: their
steps are host commands (the venv python, the checkout's code, no image build per change) and the
chaos tier kills step processes directly. It registers a Node, keeps its Lease fresh, and for every
pod scheduled onto it runs each container's command+args as a local process with the pod's
environment. Images are ignored: the command must be runnable here (tests use the venv python).

What it emulates from the kubelet: env (value, valueFrom secretKeyRef/configMapKeyRef/fieldRef,
envFrom, $(VAR) expansion), workingDir, init containers, restartPolicy with back-off, termination
messages (terminationMessagePath is rewritten to a per-container file, also passed as
$CONVEYOR_TERMINATION_LOG; FallbackToLogsOnError), startup/readiness/liveness probes (httpGet,
tcpSocket, exec), graceful deletion (SIGTERM to the process group, SIGKILL after the grace
period, then the pod object is deleted), emptyDir/configMap/secret/projected volumes (made under
the pod's directory; mountPaths in command, args, env and workingDir are rewritten to it, since
there is no mount namespace). Pods that declare ports or network probes get their own network
namespace (see podnetwork.py) so their podIP is a real address; other pods share the host
network and report the node's address (like hostNetwork pods).

Not emulated: images, resource limits, PersistentVolumeClaims, hostPath, service-account token
files, `kubectl logs/exec` (container logs are files in the pod directory), Events, Services'
ClusterIPs (no kube-proxy: reach pods by podIP).

Run as ``python -m testenv.nodeagent --kubeconfig ... --node-name ... --work-dir ...``;
``NodeAgentProcess`` does that from a fixture.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import ApiException

from testenv.podnetwork import AddressPool, BridgeSpec, PodSandbox, unavailable_reason
from testenv.processes import ServerProcess, die_with_parent, wait_until

log = logging.getLogger("nodeagent")

Json = dict[str, Any]

TERMINATION_LOG_ENV = "CONVEYOR_TERMINATION_LOG"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
RESYNC_SECONDS = 30
# Back-off between container restarts: shorter than the kubelet's 10 s..5 min to keep tests quick.
RESTART_BACKOFF_START = 1.0
RESTART_BACKOFF_MAX = 10.0


def now_iso() -> str:
    """RFC 3339 seconds precision, the format of metav1.Time."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """RFC 3339 microsecond precision, the format of metav1.MicroTime (Lease renewTime)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(resp: Any) -> Any:
    return json.loads(resp.data)


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known names are replaced, unknown kept, $$ escapes a dollar."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(repl, text)


class ConfigNotReadyError(Exception):
    """A referenced Secret/ConfigMap key is missing; the kubelet retries (CreateContainerConfigError)."""


# ---------------------------------------------------------------------------------------------
# probes


@dataclass
class ProbeState:
    """Counters of one probe on one container."""

    spec: Json
    next_at: float
    successes: int = 0
    failures: int = 0
    result: bool | None = None  # None: not decided yet

    def record(self, ok: bool) -> bool | None:
        """Apply thresholds; returns the (possibly unchanged) decided result."""
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.result = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.result = False
        self.next_at = time.monotonic() + float(self.spec.get("periodSeconds", 10))
        return self.result


# ---------------------------------------------------------------------------------------------
# containers


@dataclass
class Container:
    """One container of a pod: its spec, the live process and the status the kubelet would report."""

    spec: Json
    work_dir: Path
    init: bool = False
    popen: subprocess.Popen[bytes] | None = None
    restart_count: int = 0
    started_at: str | None = None
    state: Json = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Json = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    next_start_at: float = 0.0
    done: bool = False  # terminated and will not be restarted
    exit_code: int | None = None
    probes: dict[str, ProbeState] = field(default_factory=dict)
    kill_reason: str | None = None

    @property
    def name(self) -> str:
        """Container name."""
        return str(self.spec["name"])

    @property
    def log_path(self) -> Path:
        """stdout+stderr of every run of this container."""
        return self.work_dir / f"{self.name}.log"

    @property
    def termination_log(self) -> Path:
        """Local stand-in for terminationMessagePath."""
        return self.work_dir / f"{self.name}.termination-log"

    @property
    def starts_path(self) -> Path:
        """One line per process this container started (pid and time): what fault tests count."""
        return self.work_dir / f"{self.name}.starts"

    @property
    def pid_path(self) -> Path:
        """The process group id of the container's current process (``NodeAgentProcess.kill_container``)."""
        return self.work_dir / f"{self.name}.pid"

    @property
    def kill_reason_path(self) -> Path:
        """Written by a fault test before it kills the process: the terminated reason to report (OOMKilled)."""
        return self.work_dir / f"{self.name}.kill-reason"

    def running(self) -> bool:
        """The process exists and has not exited."""
        return self.popen is not None and self.popen.poll() is None

    def status(self, pod_uid: str) -> Json:
        """containerStatuses entry; every state key is present so a strategic merge replaces it."""
        state = {"waiting": None, "running": None, "terminated": None, **self.state}
        last = {"waiting": None, "running": None, "terminated": None, **self.last_state}
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"conveyor-test://{pod_uid}/{self.name}/{self.restart_count}",
            "ready": self.ready,
            "started": self.started if not self.init else None,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": last if self.last_state else {},
        }


def _exit_code(returncode: int) -> int:
    """Shell-style exit code: a process killed by signal N reports 128+N, as container runtimes do."""
    return 128 - returncode if returncode < 0 else returncode


def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)


def kill_processes(popens: list[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process group, SIGKILL whatever is still alive after ``grace`` seconds."""
    live = [p for p in popens if p.poll() is None]
    for p in live:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.monotonic()))
    for p in popens:
        _signal_group(p, signal.SIGKILL)  # also reaps grandchildren left in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)


# ---------------------------------------------------------------------------------------------
# pods


class PodRunner(threading.Thread):
    """Runs one pod from start to termination or deletion, reporting status like a kubelet."""

    def __init__(self, agent: NodeAgent, pod: Json) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.work_dir = agent.work_dir / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.home = self.work_dir / "home"
        self.home.mkdir(exist_ok=True)
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.init_containers = [Container(c, self.work_dir, init=True) for c in spec.get("initContainers") or []]
        self.containers = [Container(c, self.work_dir) for c in spec.get("containers") or []]
        self.sandbox: PodSandbox | None = None
        self.pod_ip = agent.node_ip
        self.start_time = now_iso()
        self.delete_requested = threading.Event()
        self.delete_grace: float = float(spec.get("terminationGracePeriodSeconds", 30))
        self.gone = threading.Event()  # the pod object no longer exists
        self.stop_requested = threading.Event()  # the agent is shutting down
        self.finished = threading.Event()
        self._conditions: dict[str, Json] = {}
        self._last_pushed: str | None = None
        self._phase = "Pending"
        self._pod_message: str | None = None

    # -- entry points from the agent ------------------------------------------------------

    def request_delete(self, grace: float | None) -> None:
        """The pod got a deletionTimestamp: stop it within ``grace`` seconds, then delete it."""
        if grace is not None:
            self.delete_grace = grace
        self.delete_requested.set()

    def object_gone(self) -> None:
        """The pod object vanished (forced deletion): kill at once, nothing left to report."""
        self.gone.set()
        self.delete_grace = 0
        self.delete_requested.set()

    # -- thread body ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:
            log.exception("pod %s/%s: runner crashed", self.namespace, self.pod_name)
            # Say so in the pod, or a test would only see a pod stuck in Pending.
            self._phase = "Failed"
            self._pod_message = f"test node agent error: {exc!r}"
            with contextlib.suppress(Exception):
                self._push_status()
        finally:
            self._kill_all(0.0 if self.gone.is_set() else 2.0)
            self._destroy_sandbox()
            self.finished.set()

    def _run(self) -> None:
        if self._needs_network_namespace():
            if self.agent.address_pool is None or self.agent.bridge is None:
                log.warning(
                    "pod %s/%s wants its own network but netns is unavailable: %s",
                    self.namespace,
                    self.pod_name,
                    self.agent.netns_unavailable,
                )
            else:
                address = self.agent.address_pool.take()
                self.sandbox = PodSandbox(self.agent.bridge, self.uid, address)
                try:
                    self.sandbox.create()
                except Exception:
                    self.agent.address_pool.give_back(address)
                    self.sandbox = None
                    raise
                self.pod_ip = address
        self._set_condition("PodReadyToStartContainers", True)
        self._set_condition("Initialized", not self.init_containers)
        self._set_condition("ContainersReady", False, "ContainersNotReady")
        self._set_condition("Ready", False, "ContainersNotReady")
        self._push_status()

        for container in self.init_containers:
            if not self._run_to_completion(container):
                return self._finish_after_deletion()
        self._set_condition("Initialized", True)

        self._phase = "Running"
        while not self._stopping():
            for container in self.containers:
                self._tick(container)
            self._update_readiness()
            if all(c.done for c in self.containers):
                self._phase = "Succeeded" if all(c.exit_code == 0 for c in self.containers) else "Failed"
                self._set_condition("Ready", False, "PodCompleted")
                self._set_condition("ContainersReady", False, "PodCompleted")
                self._push_status()
                self._destroy_sandbox()
                return self._finish_after_deletion()
            self._push_status()
            self.delete_requested.wait(0.2)
        self._terminate_for_deletion()

    def _finish_after_deletion(self) -> None:
        """A terminal pod keeps nothing running; wait for its deletion and complete it."""
        while not self._stopping():
            self._push_status()  # a no-op once the final status is in; retried while the API server is away
            self.delete_requested.wait(1.0)
        if self.delete_requested.is_set() and not self.stop_requested.is_set():
            self._delete_object()

    def _stopping(self) -> bool:
        return self.delete_requested.is_set() or self.stop_requested.is_set()

    def _terminate_for_deletion(self) -> None:
        if self.stop_requested.is_set() and not self.delete_requested.is_set():
            return  # agent shutdown: run() kills the processes
        self._kill_all(self.delete_grace)
        for c in self.containers:
            self._record_exit(c)
        if not self.gone.is_set():
            codes = [c.exit_code or 0 for c in self.containers]
            self._phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
            self._set_condition("Ready", False, "PodCompleted")
            self._set_condition("ContainersReady", False, "PodCompleted")
            with contextlib.suppress(ApiException):
                self._push_status()
            self._delete_object()

    def _delete_object(self) -> None:
        """Finish a graceful deletion the way the kubelet does: delete with grace 0, matching UID."""
        body = k8s_client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=k8s_client.V1Preconditions(uid=self.uid)
        )
        for wait in (0.5, 1, 2, 4, 8, 15, 30, 0):
            try:
                self.agent.core.delete_namespaced_pod(self.pod_name, self.namespace, body=body)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if not wait:
                    raise
                log.warning("pod %s/%s: delete failed, will retry: %s", self.namespace, self.pod_name, exc)
                time.sleep(wait)
                continue
            return

    # -- containers -----------------------------------------------------------------------

    def _needs_network_namespace(self) -> bool:
        spec = self.pod["spec"]
        if spec.get("hostNetwork"):
            return False
        for c in spec.get("containers") or []:
            if c.get("ports"):
                return True
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                p = c.get(probe) or {}
                if "httpGet" in p or "tcpSocket" in p or "grpc" in p:
                    return True
        return False

    def _run_to_completion(self, container: Container) -> bool:
        """Init container: run (and retry per restartPolicy) until it succeeds; False if the pod fails."""
        while not self._stopping():
            self._tick(container)
            self._push_status()
            if container.done:
                if container.exit_code == 0:
                    return True
                self._phase = "Failed"
                self._push_status()
                return False
            self.delete_requested.wait(0.2)
        self._kill_all(self.delete_grace)
        return False

    def _tick(self, c: Container) -> None:
        """Advance one container: start it when due, notice its exit, run its probes."""
        if c.done:
            return
        if c.popen is None:
            if time.monotonic() >= c.next_start_at:
                self._start(c)
            return
        if c.popen.poll() is not None:
            self._record_exit(c)
            restart = (self.restart_policy == "Always" and not c.init) or (
                self.restart_policy in ("Always", "OnFailure") and c.exit_code != 0
            )
            if restart:
                delay = min(RESTART_BACKOFF_START * 2**c.restart_count, RESTART_BACKOFF_MAX)
                c.next_start_at = time.monotonic() + delay
                c.last_state = {"terminated": c.state["terminated"]}
                c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {delay:.0f}s"}}
                c.restart_count += 1
                c.popen = None
            else:
                c.done = True
            return
        if not c.init:
            self._probe(c)

    def _start(self, c: Container) -> None:
        try:
            env = self._environment(c)
        except ConfigNotReadyError as exc:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            c.next_start_at = time.monotonic() + 1.0
            return
        c.termination_log.write_bytes(b"")

        def local(text: str) -> str:
            return self._localize(c, expand(text, env))

        argv = [local(a) for a in (c.spec.get("command") or [])] + [local(a) for a in (c.spec.get("args") or [])]
        if not argv:
            self._fail_start(c, "the test node agent runs commands, not images: set command")
            return
        cwd = self._working_dir(c)
        if self.sandbox is not None:
            argv = self.sandbox.exec_prefix() + argv
        # If the agent is SIGKILLed the process dies too (this runner thread outlives the process).
        argv = die_with_parent(argv, signal.SIGKILL)
        try:
            with c.log_path.open("ab") as out:
                c.popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
        except OSError as exc:
            self._fail_start(c, f"cannot start {argv[0]!r}: {exc}")
            return
        c.started_at = now_iso()
        with c.starts_path.open("a") as starts:
            starts.write(f"{c.popen.pid} {c.started_at}\n")
        c.pid_path.write_text(str(c.popen.pid))
        c.state = {"running": {"startedAt": c.started_at}}
        c.kill_reason = None
        now = time.monotonic()
        c.probes = {
            kind: ProbeState(c.spec[kind], now + float(c.spec[kind].get("initialDelaySeconds", 0)))
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if c.spec.get(kind)
        }
        c.started = "startupProbe" not in c.probes
        c.ready = False
        log.info("pod %s/%s container %s started: %s", self.namespace, self.pod_name, c.name, argv)

    def _fail_start(self, c: Container, message: str) -> None:
        at = now_iso()
        c.exit_code = 128
        c.state = {
            "terminated": {
                "exitCode": 128,
                "reason": "StartError",
                "message": message,
                "startedAt": at,
                "finishedAt": at,
            }
        }
        if self.restart_policy == "Never" or (c.init and self.restart_policy != "Always"):
            c.done = True
        else:
            c.last_state = {"terminated": c.state["terminated"]}
            c.restart_count += 1
            c.next_start_at = time.monotonic() + min(RESTART_BACKOFF_START * 2**c.restart_count, 10)
            c.state = {"waiting": {"reason": "RunContainerError", "message": message}}

    def _record_exit(self, c: Container) -> None:
        """Turn an exited process into a terminated state with exit code and termination message."""
        if c.popen is None or c.popen.poll() is None or "terminated" in c.state:
            return
        code = _exit_code(int(c.popen.returncode))
        c.exit_code = code
        c.ready = False
        message = c.termination_log.read_bytes()[:MAX_TERMINATION_MESSAGE].decode("utf-8", "replace")
        policy = c.spec.get("terminationMessagePolicy", "File")
        if not message and policy == "FallbackToLogsOnError" and code != 0:
            message = self._log_tail(c)
        injected = c.kill_reason_path.read_text().strip() if code != 0 and c.kill_reason_path.exists() else None
        terminated: Json = {
            "exitCode": code,
            "reason": injected or c.kill_reason or ("Completed" if code == 0 else "Error"),
            "startedAt": c.started_at,
            "finishedAt": now_iso(),
            "containerID": f"conveyor-test://{self.uid}/{c.name}/{c.restart_count}",
        }
        if message:
            terminated["message"] = message
        c.state = {"terminated": terminated}
        log.info("pod %s/%s container %s exited %d", self.namespace, self.pod_name, c.name, code)

    @staticmethod
    def _log_tail(c: Container) -> str:
        if not c.log_path.exists():
            return ""
        lines = c.log_path.read_bytes().decode("utf-8", "replace").splitlines()[-FALLBACK_LOG_LINES:]
        return "\n".join(lines)[-FALLBACK_LOG_BYTES:]

    def _working_dir(self, c: Container) -> Path:
        """The container's workingDir if it exists here, else the same path under the pod's dir."""
        wanted = c.spec.get("workingDir")
        if not wanted:
            return self.home
        path = Path(self._localize(c, wanted))
        if path.is_dir():
            return path
        local = self.work_dir / "rootfs" / path.relative_to(path.anchor)
        local.mkdir(parents=True, exist_ok=True)
        return local

    def _kill_all(self, grace: float) -> None:
        containers = self.init_containers + self.containers
        kill_processes([c.popen for c in containers if c.popen is not None], grace)

    def _destroy_sandbox(self) -> None:
        if self.sandbox is not None:
            self.sandbox.destroy()
            if self.agent.address_pool is not None:
                self.agent.address_pool.give_back(self.sandbox.address)
            self.sandbox = None

    # -- environment ----------------------------------------------------------------------

    def _environment(self, c: Container) -> dict[str, str]:
        """The process environment: a small base, envFrom, then env (with $(VAR) expansion)."""
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.home),
            "HOSTNAME": self.pod_name,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            TERMINATION_LOG_ENV: str(c.termination_log),
        }
        for source in c.spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._config_data("configmaps", source["configMapRef"])
            elif "secretRef" in source:
                data = self._config_data("secrets", source["secretRef"])
            else:
                continue
            for key, value in data.items():
                env[prefix + key] = value
        for var in c.spec.get("env") or []:
            if "valueFrom" in var:
                resolved = self._value_from(var["valueFrom"])
                if resolved is None:
                    continue
                env[var["name"]] = resolved
            else:
                env[var["name"]] = expand(str(var.get("value", "")), env)
        # Mounted paths only exist under the pod's directory here (see _localize).
        self._prepare_volumes(c)
        for key, value in env.items():
            if key != TERMINATION_LOG_ENV:
                env[key] = self._localize(c, value)
        return env

    # -- volumes --------------------------------------------------------------------------

    def _mounts(self, c: Container) -> list[tuple[str, Path]]:
        """(mountPath, local directory) of each volumeMount plus the termination message path,
        longest mountPath first so nested mounts win."""
        volumes_dir = self.work_dir / "volumes"
        mounts = [
            (str(m["mountPath"]).rstrip("/") or "/", volumes_dir / m["name"] / m.get("subPath", ""))
            for m in c.spec.get("volumeMounts") or []
        ]
        termination = str(c.spec.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)
        mounts.append((termination, c.termination_log))
        return sorted(mounts, key=lambda m: len(m[0]), reverse=True)

    def _localize(self, c: Container, text: str) -> str:
        """Rewrite container paths (volume mounts, terminationMessagePath) in ``text`` to local ones.

        There is no mount namespace: a container path is only reachable by the process if the
        command line or environment names it, so those strings are rewritten.
        """
        for mount_path, local in self._mounts(c):
            pattern = r"(?<![\w.-])" + re.escape(mount_path) + r"(?=/|$|[^\w.-])"
            dest = str(local)

            def rewrite(m: re.Match[str], dest: str = dest) -> str:
                # A longer path below the mount that exists on this machine (the test's own Python,
                # when the checkout lives under /tmp) is a host path, not a file in the empty volume. A colon
                # ends the path: PATH-like values list several.
                rest = re.match(r"/[^\s'\":]+", m.string[m.end() :])
                if rest and Path(m.group(0) + rest.group(0)).exists():
                    return m.group(0)
                return dest

            text = re.sub(pattern, rewrite, text)
        return text

    def _prepare_volumes(self, c: Container) -> None:
        """Materialize emptyDir/configMap/secret/projected volumes used by ``c`` under the pod dir."""
        mounted = {m["name"] for m in c.spec.get("volumeMounts") or []}
        for volume in self.pod["spec"].get("volumes") or []:
            if volume["name"] not in mounted:
                continue
            target = self.work_dir / "volumes" / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            sources: list[tuple[str, Json]] = []
            if "configMap" in volume:
                sources.append(("configmaps", volume["configMap"]))
            elif "secret" in volume:
                ref = volume["secret"]
                sources.append(("secrets", {**ref, "name": ref.get("secretName")}))
            elif "projected" in volume:
                for src in volume["projected"].get("sources") or []:
                    if "configMap" in src:
                        sources.append(("configmaps", src["configMap"]))
                    elif "secret" in src:
                        sources.append(("secrets", src["secret"]))
            for kind, ref in sources:
                data = self._config_data(kind, ref)
                items = ref.get("items")
                chosen = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
                for key, rel in chosen.items():
                    if key not in data:
                        if ref.get("optional"):
                            continue
                        raise ConfigNotReadyError(f"key {key!r} not in {kind[:-1]} {ref.get('name')!r}")
                    path = target / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(data[key])

    def _config_data(self, kind: str, ref: Json) -> dict[str, str]:
        """All keys of a Secret (decoded) or ConfigMap; {} if optional and absent."""
        try:
            if kind == "secrets":
                obj = _json(self.agent.core.read_namespaced_secret(ref["name"], self.namespace, _preload_content=False))
                return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
            obj = _json(self.agent.core.read_namespaced_config_map(ref["name"], self.namespace, _preload_content=False))
            return {str(k): str(v) for k, v in (obj.get("data") or {}).items()}
        except ApiException as exc:
            if exc.status == 404 and ref.get("optional"):
                return {}
            if exc.status == 404:
                raise ConfigNotReadyError(f"{kind[:-1]} {ref['name']!r} not found") from exc
            raise

    def _value_from(self, source: Json) -> str | None:
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            kind, ref = (
                ("secrets", source["secretKeyRef"])
                if "secretKeyRef" in source
                else ("configmaps", source["configMapKeyRef"])
            )
            data = self._config_data(kind, ref)
            if ref["key"] in data:
                return data[ref["key"]]
            if ref.get("optional"):
                return None
            raise ConfigNotReadyError(f"key {ref['key']!r} not found in {kind[:-1]} {ref['name']!r}")
        if "fieldRef" in source:
            return self._field(source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            for c in self.pod["spec"]["containers"]:
                if c["name"] == ref.get("containerName", c["name"]):
                    kind, _, res = ref["resource"].partition(".")
                    return str((c.get("resources") or {}).get(kind, {}).get(res, "0"))
        return None

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.agent.node_name,
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": self.pod_ip,
            "status.hostIP": self.agent.node_ip,
        }
        if path in simple:
            return str(simple[path])
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        return ""

    # -- probes ---------------------------------------------------------------------------

    def _probe(self, c: Container) -> None:
        now = time.monotonic()
        if not c.started:
            state = c.probes["startupProbe"]
            if now >= state.next_at:
                result = state.record(self._run_probe(c, state.spec))
                if result is True:
                    c.started = True
                elif result is False:
                    self._kill_for_restart(c, "startup probe failed")
            return
        liveness = c.probes.get("livenessProbe")
        if liveness and now >= liveness.next_at and liveness.record(self._run_probe(c, liveness.spec)) is False:
            self._kill_for_restart(c, "liveness probe failed")
            return
        readiness = c.probes.get("readinessProbe")
        if readiness is None:
            c.ready = True
        elif now >= readiness.next_at:
            readiness.record(self._run_probe(c, readiness.spec))
            c.ready = readiness.result is True

    def _kill_for_restart(self, c: Container, why: str) -> None:
        log.info("pod %s/%s container %s: %s, killing", self.namespace, self.pod_name, c.name, why)
        c.kill_reason = "Error"
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        if c.popen is not None:
            kill_processes([c.popen], grace)

    def _port(self, c: Container, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"named port {port!r} not declared by container {c.name}")

    def _run_probe(self, c: Container, spec: Json) -> bool:
        """One probe attempt from the agent (the node), as the kubelet does it."""
        timeout = float(spec.get("timeoutSeconds", 1))
        try:
            if "httpGet" in spec:
                get = spec["httpGet"]
                host = get.get("host") or self.pod_ip
                port = self._port(c, get["port"])
                conn_cls = http.client.HTTPSConnection if get.get("scheme") == "HTTPS" else http.client.HTTPConnection
                conn = conn_cls(host, port, timeout=timeout)
                try:
                    headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                    conn.request("GET", get.get("path", "/"), headers=headers)
                    status = conn.getresponse().status
                finally:
                    conn.close()
                return 200 <= status < 400
            if "tcpSocket" in spec or "grpc" in spec:
                sock_spec = spec.get("tcpSocket") or spec["grpc"]
                host = sock_spec.get("host") or self.pod_ip
                with socket.create_connection((host, self._port(c, sock_spec["port"])), timeout=timeout):
                    return True
            if "exec" in spec:
                env = self._environment(c)
                argv = [self._localize(c, expand(a, env)) for a in spec["exec"].get("command") or []]
                if self.sandbox is not None:
                    argv = self.sandbox.exec_prefix() + argv
                done = subprocess.run(
                    argv, env=env, cwd=self._working_dir(c), capture_output=True, timeout=timeout, check=False
                )
                return done.returncode == 0
        except (
            OSError,
            subprocess.TimeoutExpired,
            http.client.HTTPException,
            ValueError,
            ConfigNotReadyError,
        ):
            return False
        return False

    # -- status ---------------------------------------------------------------------------

    def _update_readiness(self) -> None:
        ready = all(c.running() and c.ready for c in self.containers)
        self._set_condition("ContainersReady", ready, None if ready else "ContainersNotReady")
        self._set_condition("Ready", ready, None if ready else "ContainersNotReady")

    def _set_condition(self, kind: str, value: bool, reason: str | None = None) -> None:
        status = "True" if value else "False"
        old = self._conditions.get(kind)
        if old and old["status"] == status and old.get("reason") == reason:
            return
        self._conditions[kind] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "lastProbeTime": None,
            "lastTransitionTime": now_iso() if not old or old["status"] != status else old["lastTransitionTime"],
        }

    def _push_status(self) -> None:
        """Patch pod status if anything changed since the last push."""
        status: Json = {
            "phase": self._phase,
            "hostIP": self.agent.node_ip,
            "hostIPs": [{"ip": self.agent.node_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "conditions": list(self._conditions.values()),
            "containerStatuses": [c.status(self.uid) for c in self.containers],
        }
        if self._pod_message:
            status["reason"] = "NodeAgentError"
            status["message"] = self._pod_message
        if self.init_containers:
            status["initContainerStatuses"] = [c.status(self.uid) for c in self.init_containers]
        encoded = json.dumps(status, sort_keys=True)
        if encoded == self._last_pushed or self.gone.is_set():
            return
        try:
            self.agent.core.patch_namespaced_pod_status(
                self.pod_name, self.namespace, {"status": status}, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                self.object_gone()
                return
            # Not fatal: the next tick pushes again.
            log.warning("pod %s/%s: status patch failed: %s %s", self.namespace, self.pod_name, exc.status, exc.body)
            return
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # The API server is away (restarting): a kubelet keeps the status and pushes it when it is back.
            log.warning("pod %s/%s: status patch failed, will retry: %s", self.namespace, self.pod_name, exc)
            return
        self._last_pushed = encoded


# ---------------------------------------------------------------------------------------------
# the agent


class NodeAgent:
    """Registers the Node, keeps its Lease, and runs a PodRunner for every pod bound to it."""

    def __init__(
        self,
        kubeconfig: Path,
        node_name: str,
        work_dir: Path,
        bridge: BridgeSpec | None,
        capacity: dict[str, str] | None = None,
    ) -> None:
        self.node_name = node_name
        self.work_dir = work_dir
        self.capacity = capacity or {
            "cpu": "16",
            "memory": "64Gi",
            "pods": "110",
            "ephemeral-storage": "100Gi",
        }
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = 64
        self.api = k8s_client.ApiClient(configuration)
        self.core = k8s_client.CoreV1Api(self.api)
        self.coordination = k8s_client.CoordinationV1Api(self.api)
        self.netns_unavailable = unavailable_reason() if bridge is not None else "no pod bridge given"
        self.bridge = bridge if self.netns_unavailable is None else None
        self.address_pool = AddressPool(bridge) if self.bridge is not None and bridge is not None else None
        self.node_ip = self.bridge.gateway if self.bridge is not None else _primary_ip()
        self.runners: dict[str, PodRunner] = {}
        self._started_iso = now_iso()
        self.stopped = threading.Event()
        self._lock = threading.Lock()

    # -- node -----------------------------------------------------------------------------

    def register(self) -> None:
        """Create (or update) the Node with Ready status and capacity."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64" if platform.machine() == "x86_64" else platform.machine(),
                    "conveyor.dev/test-node": "true",
                },
                "annotations": {"conveyor.dev/pod-network": self.netns_unavailable or "netns"},
            },
            "spec": {"podCIDR": self.bridge.cidr} if self.bridge else {},
        }
        try:
            self.core.create_node(node, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._heartbeat_status()

    def _heartbeat_status(self) -> None:
        stamp = now_iso()

        def condition(kind: str, status: str, reason: str) -> Json:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": reason,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": self._started_iso,
            }

        status = {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.node_ip},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "conveyor-test",
                "systemUUID": "conveyor-test",
                "bootID": self._started_iso,
                "kernelVersion": platform.release(),
                "osImage": "conveyor test node agent",
                "containerRuntimeVersion": "conveyor-test://0.1",
                "kubeletVersion": "v0.0.0-conveyor-test",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        self.core.patch_node_status(self.node_name, {"status": status}, _preload_content=False)

    def _renew_lease(self) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.node_name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": now_micro(),
            },
        }
        try:
            self.coordination.patch_namespaced_lease(
                self.node_name, "kube-node-lease", {"spec": body["spec"]}, _preload_content=False
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body, _preload_content=False)

    def _heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            try:
                self._renew_lease()
                if time.monotonic() - last_status > 30:
                    self._heartbeat_status()
                    last_status = time.monotonic()
            except Exception:
                log.exception("heartbeat failed")

    # -- pods -----------------------------------------------------------------------------

    def handle(self, event: str, pod: Json) -> None:
        """React to one pod event (from a watch or a re-list)."""
        uid = pod["metadata"]["uid"]
        with self._lock:
            runner = self.runners.get(uid)
            if event == "DELETED":
                if runner is not None:
                    runner.object_gone()
                return
            deleting = pod["metadata"].get("deletionTimestamp") is not None
            if runner is None:
                phase = (pod.get("status") or {}).get("phase")
                if deleting:
                    # Nothing runs for it here (finished earlier or never started): complete the deletion.
                    threading.Thread(target=self._force_delete, args=(pod,), daemon=True).start()
                    return
                if phase in ("Succeeded", "Failed"):
                    return
                runner = PodRunner(self, pod)
                self.runners[uid] = runner
                runner.start()
            elif deleting:
                grace = pod["metadata"].get("deletionGracePeriodSeconds")
                runner.request_delete(float(grace) if grace is not None else None)

    def _force_delete(self, pod: Json) -> None:
        meta = pod["metadata"]
        body = k8s_client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=k8s_client.V1Preconditions(uid=meta["uid"])
        )
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=body)

    def _list(self) -> str:
        data = _json(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node_name}", _preload_content=False
            )
        )
        present = set()
        for pod in data.get("items") or []:
            pod.setdefault("metadata", {})
            present.add(pod["metadata"]["uid"])
            self.handle("ADDED", pod)
        with self._lock:
            vanished = [r for uid, r in self.runners.items() if uid not in present]
        for runner in vanished:
            runner.object_gone()
        return str(data["metadata"]["resourceVersion"])

    def _watch_loop(self) -> None:
        """List, then watch from that version; re-list on expiry, error, and every RESYNC_SECONDS."""
        while not self.stopped.is_set():
            try:
                version = self._list()
                started = time.monotonic()
                while not self.stopped.is_set() and time.monotonic() - started < RESYNC_SECONDS:
                    resp: Any = self.core.list_pod_for_all_namespaces(
                        field_selector=f"spec.nodeName={self.node_name}",
                        watch=True,
                        resource_version=version,
                        allow_watch_bookmarks=True,
                        timeout_seconds=10,
                        _preload_content=False,
                    )
                    try:
                        for line in resp:
                            if not line.strip():
                                continue
                            event = json.loads(line)
                            if event["type"] == "ERROR":
                                raise RuntimeError(f"watch error: {event['object'].get('message')}")
                            version = event["object"]["metadata"]["resourceVersion"]
                            if event["type"] != "BOOKMARK":
                                self.handle(event["type"], event["object"])
                    finally:
                        resp.release_conn()
            except Exception as exc:
                if not self.stopped.is_set():
                    log.warning("pod watch restarting: %s", exc)
                    self.stopped.wait(0.5)

    def _reap_loop(self) -> None:
        while not self.stopped.wait(2.0):
            with self._lock:
                for uid, runner in list(self.runners.items()):
                    if runner.finished.is_set() and runner.gone.is_set():
                        del self.runners[uid]

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        """Register, then serve pods until ``stop()``."""
        self.register()
        self._renew_lease()
        threads = [
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True),
            threading.Thread(target=self._watch_loop, name="watch", daemon=True),
            threading.Thread(target=self._reap_loop, name="reap", daemon=True),
        ]
        for t in threads:
            t.start()
        log.info(
            "node %s registered (node IP %s, pod network: %s)",
            self.node_name,
            self.node_ip,
            self.netns_unavailable or f"netns on {self.bridge}",
        )
        self.stopped.wait()
        self._shutdown()

    def stop(self) -> None:
        """Ask ``run()`` to return (signal-safe)."""
        self.stopped.set()

    def _shutdown(self) -> None:
        with self._lock:
            runners = list(self.runners.values())
        for runner in runners:
            runner.stop_requested.set()
            runner.delete_grace = min(runner.delete_grace, 5.0)
        for runner in runners:
            runner.join(15)
        self.api.close()
        log.info("node agent stopped")


def _primary_ip() -> str:
    """A non-loopback address of this machine (the node address when pods share the host network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"


# ---------------------------------------------------------------------------------------------
# running it from a fixture


class NodeAgentProcess:
    """Starts the agent as a subprocess (own log, own process group) and waits for its Node to be Ready."""

    def __init__(
        self,
        kubeconfig: Path,
        work_dir: Path,
        log_dir: Path,
        bridge: BridgeSpec | None,
        node_name: str = "conveyor-test-node",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.node_name = node_name
        self.work_dir = work_dir
        self.bridge = bridge
        argv = [
            sys.executable,
            "-m",
            "testenv.nodeagent",
            "--kubeconfig",
            str(kubeconfig),
            "--node-name",
            node_name,
            "--work-dir",
            str(work_dir),
        ]
        if bridge is not None:
            argv += ["--bridge", bridge.bridge, "--pod-cidr", bridge.cidr, "--gateway", bridge.gateway]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
        # SIGTERM on parent death: the agent then stops its pods and removes their namespaces.
        self.process = ServerProcess(
            "node-agent", argv, log_dir / "node-agent.log", env=env, parent_death_signal=signal.SIGTERM
        )

    @property
    def pods_dir(self) -> Path:
        """Per-pod directories with container logs and termination-message files."""
        return self.work_dir / "pods"

    def start(self, node_ready: Callable[[], bool], timeout: float = 30) -> NodeAgentProcess:
        """Launch and wait until ``node_ready()`` (the Node is Ready in the API)."""
        self.process.start()
        try:
            wait_until(node_ready, timeout=timeout, what=f"node {self.node_name} Ready", process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM lets the agent kill pod processes and remove namespaces; SIGKILL after 30 s."""
        self.process.stop(grace=30)

    def container_starts(self, namespace: str) -> dict[tuple[str, str], int]:
        """How many processes each container of each pod in ``namespace`` started: (pod, container) → count.

        Counted from the agent's own per-pod records, so it includes processes the API never heard of."""
        counts: dict[tuple[str, str], int] = {}
        for d in self.pods_dir.glob(f"{namespace}_*"):
            pod = d.name[len(namespace) + 1 :].rsplit("_", 1)[0]
            for starts in d.glob("*.starts"):
                key = (pod, starts.name.removesuffix(".starts"))
                counts[key] = counts.get(key, 0) + len(starts.read_text().splitlines())
        return counts

    def kill_container(
        self, namespace: str, pod: str, container: str, sig: signal.Signals = signal.SIGKILL, reason: str | None = None
    ) -> bool:
        """Send ``sig`` to the running process (group) of a pod's container, as the kernel's OOM killer or a crash
        would. The agent then reports the container terminated (exit 128+sig, ``reason`` if given, e.g.
        ``OOMKilled``) and, with restartPolicy Never, the pod Failed. False if no such process is running."""
        for d in sorted(self.pods_dir.glob(f"{namespace}_{pod}_*")):
            pid_path = d / f"{container}.pid"
            if not pid_path.exists():
                continue
            pid = int(pid_path.read_text())
            if reason is not None:
                (d / f"{container}.kill-reason").write_text(reason)
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                (d / f"{container}.kill-reason").unlink(missing_ok=True)
                continue
            return True
        return False

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        """stdout+stderr of a container, found by pod name (the kubelet's `kubectl logs` stand-in)."""
        for d in sorted(self.pods_dir.glob(f"{namespace}_{pod}_*")):
            path = d / f"{container}.log"
            if path.exists():
                return path.read_text(errors="replace")
        return ""


def main(argv: list[str] | None = None) -> int:
    """CLI entry: run the agent until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node-name", default="conveyor-test-node")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--bridge", help="root-namespace bridge for pod network namespaces")
    parser.add_argument("--pod-cidr")
    parser.add_argument("--gateway")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    bridge = BridgeSpec(args.bridge, args.pod_cidr, args.gateway) if args.bridge else None
    agent = NodeAgent(args.kubeconfig, args.node_name, args.work_dir, bridge)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
