"""The operator benchmark: step overhead, Run throughput, memory and fan-out Run size on kwok nodes.

One operator process (`python -m conveyor.controller --standalone`) runs against the test control
plane of tests/testenv (etcd, kube-apiserver, kube-controller-manager with the Job controller,
kube-scheduler), a MinIO for its store, and kwok, which pretends to run pods on fake Nodes: pods
become Ready and then complete at once with `{"ok": true}` as their termination message
(bench/kwok-stages.yaml), so every cost measured here is control plane plus operator, never a step.

Phases, each in a namespace of its own:
  overhead-<c>  c concurrent Runs of a chain of steps; per-step overhead = the upstream step's pod
                finishing → the next step's Job existing, measured three ways (see `OverheadResult`)
  throughput    N single-step Runs created at once; Runs completed per minute
  memory        the operator's VmRSS with at least M Runs existing (sampled throughout, too)
  fanout        one Run fanning a step out over W items, then one downstream step; Run object size

Usage: .venv/bin/python bench/operator_bench.py [--concurrency 1,50,200] [--runs-per-minute 1000] ...
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kubernetes import client as k8s_client  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from kubernetes.watch.watch import iter_resp_lines  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from testenv.binaries import Binaries  # noqa: E402
from testenv.controlplane import ControlPlane  # noqa: E402
from testenv.crds import apply_crds, crd_files  # noqa: E402
from testenv.minio import MinioServer  # noqa: E402
from testenv.processes import ServerProcess, free_port, http_ok, owned_temp_dir, wait_until  # noqa: E402

GROUP, VERSION = "conveyor.dev", "v1alpha1"
STAGES = Path(__file__).resolve().parent / "kwok-stages.yaml"
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
STEP_IMAGE = "registry.invalid/conveyor-bench/noop:0"  # never pulled: kwok runs nothing
FINAL = ("Succeeded", "Failed", "Cancelled")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------- numbers


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (no interpolation: with few samples p99 is the maximum)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Histogram:
    """One Prometheus histogram series: cumulative bucket counts by upper bound, and the sum."""

    buckets: list[tuple[float, float]] = field(default_factory=list)
    total: float = 0.0
    sum: float = 0.0

    def minus(self, earlier: Histogram) -> Histogram:
        before = dict(earlier.buckets)
        return Histogram(
            [(le, c - before.get(le, 0.0)) for le, c in self.buckets],
            self.total - earlier.total,
            self.sum - earlier.sum,
        )

    def quantile(self, q: float) -> float | None:
        """Like PromQL histogram_quantile: linear within the bucket; +Inf answers the largest finite bound."""
        if self.total <= 0:
            return None
        rank = q * self.total
        lower, below = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower
                width = cumulative - below
                return lower + (le - lower) * ((rank - below) / width if width else 1.0)
            lower, below = le, cumulative
        return lower

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.total,
            "mean": self.sum / self.total if self.total else None,
            "p50": self.quantile(0.5),
            "p99": self.quantile(0.99),
            "buckets": self.buckets,
        }


def parse_histogram(text: str, name: str, labels: dict[str, str]) -> Histogram:
    hist = Histogram()
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name == f"{name}_bucket":
                hist.buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == f"{name}_count":
                hist.total = sample.value
            elif sample.name == f"{name}_sum":
                hist.sum = sample.value
    hist.buckets.sort()
    return hist


def parse_k8s_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------------------------------- processes


class KwokProcess:
    """The kwok controller, managing Nodes annotated kwok.x-k8s.io/node=fake with our stages."""

    def __init__(self, cp: ControlPlane, stages: Path) -> None:
        self.work_dir = owned_temp_dir("conveyor-bench-kwok-")
        self.process = ServerProcess(
            "kwok",
            [
                str(cp.binaries.kwok),
                f"--kubeconfig={cp.kubeconfig}",
                "--manage-nodes-with-annotation-selector=" + "=".join(FAKE_NODE_ANNOTATION),
                f"--config={stages}",
                "--node-lease-duration-seconds=40",
                "--cidr=10.0.0.0/16",
            ],
            cp.log_dir / "kwok.log",
            env={**os.environ, "KWOK_WORKDIR": str(self.work_dir)},
        )

    def start(self) -> KwokProcess:
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)


class OperatorProcess:
    """`python -m conveyor.controller --standalone`, configured like tests/e2e/test_operator.py does."""

    def __init__(
        self,
        cp: ControlPlane,
        minio: MinioServer,
        resync_seconds: float | None,
        *,
        trace_out: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        s3 = minio.endpoint
        self.metrics_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(cp.kubeconfig),
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": s3.region,
            "CONVEYOR_S3_ENDPOINT": s3.endpoint,
            "CONVEYOR_S3_BUCKET": s3.bucket,
            "CONVEYOR_STEP_IMAGE": STEP_IMAGE,
            "CONVEYOR_METRICS_PORT": str(self.metrics_port),
            "CONVEYOR_HEALTH_PORT": str(free_port()),
        }
        if resync_seconds is not None:
            env["CONVEYOR_RESYNC_SECONDS"] = str(resync_seconds)
        env.update(extra_env or {})
        self.trace_out = trace_out
        command = [sys.executable, "-m", "conveyor.controller", "--standalone"]
        if trace_out is not None:
            env["CONVEYOR_BENCH_TRACE_OUT"] = str(trace_out)
            command = [sys.executable, str(ROOT / "bench" / "traced_operator.py"), "--standalone"]
        self.log_path = cp.log_dir / "operator.log"
        self.process = ServerProcess("operator", command, self.log_path, env=env)

    def start(self) -> OperatorProcess:
        self.process.start()
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{self.metrics_port}/metrics"),
            timeout=60 if self.trace_out is None else 300,  # imports alone take ~20 s under tracemalloc
            what="the operator's metrics endpoint",
            process=self.process,
        )
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    def stop(self) -> None:
        self.process.stop(grace=10)

    def heap_report(self, timeout: float = 300) -> dict[str, Any]:
        """The traced Python heap (bench/traced_operator.py), asked for with SIGUSR2."""
        assert self.trace_out is not None
        self.trace_out.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR2)
        wait_until(self.trace_out.exists, timeout=timeout, what="the operator's heap report", process=self.process)
        report: dict[str, Any] = json.loads(self.trace_out.read_text())
        return report


class RssSampler(threading.Thread):
    """Samples the operator's VmRSS twice a second; keeps the peak per phase."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.phase = "startup"
        self.peaks: dict[str, int] = {}
        self.last = 0
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(OSError, RuntimeError):
                self.last = rss_bytes(self.pid)
                self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), self.last)

    def stop(self) -> None:
        self._stop.set()


# ---------------------------------------------------------------------------------------- watching


class NamespaceWatch:
    """Watches Pods and Jobs of one namespace and notes when each transition was *received*.

    Receive times have sub-second resolution, unlike the objects' own timestamps; both watches go
    through the same apiserver, so their delivery delay largely cancels out of a difference.
    """

    def __init__(self, api: k8s_client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.core = k8s_client.CoreV1Api(api)
        self.batch = k8s_client.BatchV1Api(api)
        self.lock = threading.Lock()
        self.pod_done: dict[str, tuple[float, str | None]] = {}  # job name → (received, terminated.finishedAt)
        self.job_added: dict[str, tuple[float, str, str, str]] = {}  # job → (received, creationTimestamp, run, step)
        self.job_complete: dict[str, float] = {}
        self._responses: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._closing = False

    def start(self) -> NamespaceWatch:
        for list_fn, handle in (
            (self.core.list_namespaced_pod, self._pod),
            (self.batch.list_namespaced_job, self._job),
        ):
            resp = list_fn(self.namespace, watch=True, _preload_content=False, timeout_seconds=3600)
            self._responses.append(resp)  # the watch is established once the response headers are in
            thread = threading.Thread(target=self._pump, args=(resp, handle), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _pump(self, resp: Any, handle: Callable[[float, dict[str, Any]], None]) -> None:
        try:
            for line in iter_resp_lines(resp):
                received = time.time()
                event = json.loads(line)
                if event.get("type") in ("ADDED", "MODIFIED"):
                    handle(received, event["object"])
        except Exception:
            if not self._closing:
                raise

    def _pod(self, received: float, pod: dict[str, Any]) -> None:
        job = pod["metadata"].get("labels", {}).get("batch.kubernetes.io/job-name")
        if not job:
            return
        for cs in pod.get("status", {}).get("containerStatuses", []):
            term = cs.get("state", {}).get("terminated")
            if term is not None:
                with self.lock:
                    self.pod_done.setdefault(job, (received, term.get("finishedAt")))
                return

    def _job(self, received: float, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        labels = meta.get("labels", {})
        with self.lock:
            self.job_added.setdefault(
                meta["name"],
                (
                    received,
                    meta["creationTimestamp"],
                    labels.get("conveyor.dev/run", ""),
                    labels.get("conveyor.dev/step", ""),
                ),
            )
            for cond in job.get("status", {}).get("conditions", []):
                if cond.get("type") == "Complete" and cond.get("status") == "True":
                    self.job_complete.setdefault(meta["name"], received)

    def close(self) -> None:
        self._closing = True
        for resp in self._responses:
            # Shut the socket down instead of resp.close(): close() waits on the SSL object the pump
            # thread is blocked reading from.
            with contextlib.suppress(Exception):
                resp.connection.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)


# ---------------------------------------------------------------------------------------- the cluster


def api_client(cp: ControlPlane, pool: int = 32) -> k8s_client.ApiClient:
    conf = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=conf)
    conf.connection_pool_maxsize = pool
    return k8s_client.ApiClient(conf)


def create_fake_nodes(api: k8s_client.ApiClient, count: int) -> list[str]:
    core = k8s_client.CoreV1Api(api)
    names = []
    capacity = {"cpu": "1k", "memory": "4Ti", "pods": "1M"}
    for i in range(count):
        name = f"kwok-node-{i}"
        core.create_node(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1]},
                    "labels": {"type": "kwok", "kubernetes.io/hostname": name},
                },
                "status": {"allocatable": capacity, "capacity": capacity},
            }
        )
        names.append(name)

    def all_ready() -> bool:
        for name in names:
            node: Any = core.read_node_status(name)
            if not any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
                return False
        return True

    wait_until(all_ready, timeout=60, what="kwok to make the fake Nodes Ready", interval=0.5)
    return names


def make_namespace(api: k8s_client.ApiClient, name: str, minio: MinioServer) -> str:
    core = k8s_client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})

    def default_sa() -> bool:
        accounts: Any = core.list_namespaced_service_account(name)
        return any(sa.metadata.name == "default" for sa in accounts.items)

    wait_until(default_sa, timeout=60, what=f"the default ServiceAccount in {name}", interval=0.2)
    s3 = minio.endpoint
    core.create_namespaced_secret(
        name,
        {
            "metadata": {"name": "conveyor-artifacts"},
            "stringData": {"accessKey": s3.access_key, "secretKey": s3.secret_key},
        },
    )
    return name


def container_step(name: str, depends_on: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {
        "name": name,
        "container": {"image": STEP_IMAGE, "command": ["true"]},
        "cache": {"enabled": False},  # every Run really launches its Jobs
        **extra,
    }
    if depends_on:
        step["dependsOn"] = depends_on
    return step


def create_pipeline(api: k8s_client.ApiClient, namespace: str, name: str, steps: list[dict[str, Any]]) -> int:
    """Create the Pipeline; returns its JSON size as stored."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"steps": steps},
    }
    created: Any = k8s_client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "pipelines", body
    )
    return len(json.dumps(created, separators=(",", ":")))


def create_runs(api: k8s_client.ApiClient, namespace: str, pipeline: str, count: int) -> dict[str, float]:
    """Create `count` Runs as fast as 8 client threads can; returns each Run's creation time (after the call)."""
    custom = k8s_client.CustomObjectsApi(api)

    def create(i: int) -> tuple[str, float]:
        name = f"{pipeline}-{i:05d}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Run",
            "metadata": {"name": name},
            "spec": {"pipelineRef": {"name": pipeline}},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "runs", body, _preload_content=False)
        return name, time.time()

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(create, range(count)))


def list_runs(api: k8s_client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    resp: Any = k8s_client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "runs", _preload_content=False
    )
    items: list[dict[str, Any]] = json.loads(resp.data)["items"]
    return items


def wait_runs_final(
    api: k8s_client.ApiClient, namespace: str, expected: int, timeout: float, interval: float = 1.0
) -> tuple[list[dict[str, Any]], bool]:
    """Poll until `expected` Runs are in a final phase; returns the last listing and whether all finished."""
    deadline = time.monotonic() + timeout
    while True:
        runs = list_runs(api, namespace)
        done = sum(1 for r in runs if r.get("status", {}).get("phase") in FINAL)
        if done >= expected:
            return runs, True
        if time.monotonic() > deadline:
            return runs, False
        time.sleep(interval)


class Session:
    """Everything the phases share: the cluster, the operator, samplers and metric snapshots."""

    def __init__(self, cp: ControlPlane, minio: MinioServer, kwok: KwokProcess, op: OperatorProcess) -> None:
        self.cp, self.minio, self.kwok, self.op = cp, minio, kwok, op
        self.api = api_client(cp)
        self.rss = RssSampler(op.pid)
        self.rss.start()

    def pids(self) -> dict[str, int]:
        pids = {proc.name: proc.pid for proc in self.cp.processes}
        pids.update({"kwok": self.kwok.process.pid, "minio": self.minio.process.pid, "operator": self.op.pid})  # type: ignore[union-attr]
        return pids

    def cpu(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids().items():
            with contextlib.suppress(OSError):
                out[name] = cpu_seconds(pid)
        times = os.times()
        out["benchmark"] = times.user + times.system
        return out

    def reconcile_histogram(self) -> Histogram:
        return parse_histogram(self.op.metrics(), "conveyor_reconcile_duration_seconds", {"kind": "Run"})

    def operator_counters(self) -> dict[str, float]:
        """The operator's own counters of how passes read and wrote (by "name label=value"), from its /metrics."""
        wanted = {"conveyor_run_reads", "conveyor_job_views", "conveyor_stale_status_writes", "conveyor_events_dropped"}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(self.op.metrics()):
            if family.name not in wanted:
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    out[f"{family.name} {labels}".strip()] = sample.value
        return out

    def api_requests(self) -> dict[str, float]:
        """apiserver_request_total by "VERB resource[/subresource] code", from the API server's /metrics."""
        method, url, headers, body, _ = self.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
        resp: Any = self.api.call_api(method, url, header_params=headers, body=body)
        resp.read()
        text = resp.data.decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "apiserver_request":
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                lab = sample.labels
                resource = lab.get("resource", "") + (f"/{lab['subresource']}" if lab.get("subresource") else "")
                key = f"{lab.get('verb')} {resource} {lab.get('code')}"
                out[key] = out.get(key, 0.0) + sample.value
        return out

    def settle(self, timeout: float = 30) -> None:
        """Wait until the operator's reconcile count stops moving (2 s quiet), so a phase's trailing
        passes are not counted in the next phase."""
        deadline = time.monotonic() + timeout
        last, quiet_since = -1.0, time.monotonic()
        while time.monotonic() < deadline:
            count = self.reconcile_histogram().total
            if count != last:
                last, quiet_since = count, time.monotonic()
            elif time.monotonic() - quiet_since >= 2:
                return
            time.sleep(0.5)

    @contextlib.contextmanager
    def phase(self, name: str, record: dict[str, Any]) -> Iterator[None]:
        """Per-phase accounting: CPU seconds by process, reconcile passes, peak RSS, wall time."""
        self.settle()
        self.rss.phase = name
        cpu0, rec0, t0 = self.cpu(), self.reconcile_histogram(), time.monotonic()
        req0, ops0 = self.api_requests(), self.operator_counters()
        try:
            yield
        finally:
            wall = time.monotonic() - t0
            self.settle()
            cpu1, rec1 = self.cpu(), self.reconcile_histogram()
            record["wall_seconds"] = round(wall, 2)
            record["cpu_seconds"] = {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1}
            record["reconcile"] = {k: v for k, v in rec1.minus(rec0).summary().items() if k != "buckets"}
            req1 = self.api_requests()
            delta = {k: v - req0.get(k, 0.0) for k, v in req1.items() if v - req0.get(k, 0.0) > 0}
            record["api_requests"] = dict(sorted(delta.items(), key=lambda kv: -kv[1])[:20])
            ops1 = self.operator_counters()
            record["operator_counters"] = {k: v - ops0.get(k, 0.0) for k, v in ops1.items() if v - ops0.get(k, 0.0) > 0}
            record["operator_rss_peak_mib"] = round(self.rss.peaks.get(name, 0) / 2**20, 1)
            print(f"[bench] {name}: {json.dumps({k: v for k, v in record.items() if k != 'samples'})}", flush=True)


# ---------------------------------------------------------------------------------------- phases


@dataclass
class OverheadResult:
    """Per-step overhead of one concurrency level, three ways.

    api_timestamps: next Job's metadata.creationTimestamp - upstream pod's terminated.finishedAt
        (both whole seconds, so each sample is off by up to ±1 s).
    watch: when this benchmark's watch received the next Job - when it received the upstream pod
        as terminated (sub-second; includes the Job controller marking the Job Complete).
    watch_operator_part: next Job received - upstream Job received as Complete (what the operator
        itself adds after the Job controller is done).
    operator_histogram: conveyor_step_overhead_seconds from the operator's /metrics, which starts
        at the operator's *observation* of the upstream finish (and, for first steps, at the Run's
        creationTimestamp) — not at the pod finishing.
    """

    concurrency: int
    chain: int
    runs_succeeded: int = 0
    failures: list[str] = field(default_factory=list)
    all_finished: bool = False
    wall_to_all_done_s: float | None = None
    api_timestamps: dict[str, Any] = field(default_factory=dict)
    watch: dict[str, Any] = field(default_factory=dict)
    watch_operator_part: dict[str, Any] = field(default_factory=dict)
    first_step_watch: dict[str, Any] = field(default_factory=dict)
    operator_histogram: dict[str, Any] = field(default_factory=dict)


def _dist(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": quantile(values, 0.5),
        "p99": quantile(values, 0.99),
        "max": max(values) if values else None,
        "mean": sum(values) / len(values) if values else None,
    }


def overhead_phase(s: Session, concurrency: int, chain: int, timeout: float) -> dict[str, Any]:
    ns = make_namespace(s.api, f"overhead-{concurrency}", s.minio)
    names = [f"s{i + 1}" for i in range(chain)]
    create_pipeline(s.api, ns, "chain", [container_step(n, [names[i - 1]] if i else None) for i, n in enumerate(names)])
    result = OverheadResult(concurrency, chain)
    record: dict[str, Any] = {}
    watch = NamespaceWatch(s.api, ns).start()
    try:
        with s.phase(f"overhead-{concurrency}", record):
            t0 = time.time()
            created = create_runs(s.api, ns, "chain", concurrency)
            runs, result.all_finished = wait_runs_final(s.api, ns, concurrency, timeout, interval=0.5)
            result.wall_to_all_done_s = round(time.time() - t0, 2)
    finally:
        watch.close()
    result.runs_succeeded = sum(1 for r in runs if r.get("status", {}).get("phase") == "Succeeded")
    for r in runs:
        if r.get("status", {}).get("phase") != "Succeeded":  # say why, once per distinct reason
            cond = next((c for c in r.get("status", {}).get("conditions", []) if c["type"] == "Succeeded"), {})
            reason = f"{r['status'].get('phase')} {cond.get('reason')}: {cond.get('message', '')[:300]}"
            if reason not in result.failures:
                result.failures.append(reason)
    by_run_step = {(run, step): job for job, (_, _, run, step) in watch.job_added.items()}
    api_samples, watch_samples, op_samples, first = [], [], [], []
    for run in created:
        for prev, nxt in itertools.pairwise(names):
            up, down = by_run_step.get((run, prev)), by_run_step.get((run, nxt))
            if up is None or down is None or up not in watch.pod_done:
                continue
            pod_received, finished_at = watch.pod_done[up]
            job_received, created_ts, _, _ = watch.job_added[down]
            watch_samples.append(job_received - pod_received)
            if finished_at:
                api_samples.append((parse_k8s_time(created_ts) - parse_k8s_time(finished_at)).total_seconds())
            if up in watch.job_complete:
                op_samples.append(job_received - watch.job_complete[up])
        head = by_run_step.get((run, names[0]))
        if head is not None:
            first.append(watch.job_added[head][0] - created[run])
    result.api_timestamps = _dist(api_samples)
    result.watch = _dist(watch_samples)
    result.watch_operator_part = _dist(op_samples)
    result.first_step_watch = _dist(first)
    hist = parse_histogram(s.op.metrics(), "conveyor_step_overhead_seconds", {"namespace": ns})
    result.operator_histogram = hist.summary()
    out = asdict(result)
    out.update(record)
    return out


def throughput_phase(s: Session, count: int, timeout: float) -> dict[str, Any]:
    ns = make_namespace(s.api, "throughput", s.minio)
    create_pipeline(s.api, ns, "single", [container_step("only")])
    record: dict[str, Any] = {"runs": count}
    with s.phase("throughput", record):
        t0 = time.time()
        created = create_runs(s.api, ns, "single", count)
        record["create_seconds"] = round(max(created.values()) - t0, 2)
        runs, record["all_finished"] = wait_runs_final(s.api, ns, count, timeout, interval=2.0)
        record["poll_seen_all_done_s"] = round(time.time() - t0, 2)
    finished = [
        parse_k8s_time(r["status"]["finishedAt"]).timestamp()
        for r in runs
        if r.get("status", {}).get("phase") == "Succeeded" and r["status"].get("finishedAt")
    ]
    record["succeeded"] = len(finished)
    if finished:
        # status.finishedAt is the operator's clock (same host), with sub-second resolution
        elapsed = max(finished) - t0
        record["first_create_to_last_finished_s"] = round(elapsed, 2)
        record["runs_per_minute"] = round(len(finished) / elapsed * 60, 1)
        ordered = sorted(f - t0 for f in finished)
        lo, hi = ordered[len(ordered) // 10], ordered[(len(ordered) * 9) // 10]
        if hi > lo:
            record["runs_per_minute_middle_80pct"] = round(0.8 * len(ordered) / (hi - lo) * 60, 1)
    return record


def memory_phase(s: Session, at_least: int, timeout: float) -> dict[str, Any]:
    """VmRSS with at least `at_least` Runs existing; tops up with finished single-step Runs if needed."""
    custom = k8s_client.CustomObjectsApi(s.api)
    resp: Any = custom.list_cluster_custom_object(GROUP, VERSION, "runs", _preload_content=False)
    existing = len(json.loads(resp.data)["items"])
    record: dict[str, Any] = {"runs_existing_before": existing}
    if existing < at_least:
        ns = make_namespace(s.api, "memory-filler", s.minio)
        create_pipeline(s.api, ns, "single", [container_step("only")])
        missing = at_least - existing
        create_runs(s.api, ns, "single", missing)
        _, record["filler_finished"] = wait_runs_final(s.api, ns, missing, timeout, interval=2.0)
        record["filler_runs"] = missing
    s.settle()
    s.rss.phase = "memory"
    time.sleep(5)
    resp = custom.list_cluster_custom_object(GROUP, VERSION, "runs", _preload_content=False)
    runs = json.loads(resp.data)["items"]
    record["runs_existing"] = len(runs)
    record["runs_unfinished"] = sum(1 for r in runs if r.get("status", {}).get("phase") not in FINAL)
    jobs: Any = k8s_client.BatchV1Api(s.api).list_job_for_all_namespaces(_preload_content=False)
    record["jobs_existing"] = len(json.loads(jobs.data)["items"])
    record["operator_rss_mib"] = round(rss_bytes(s.op.pid) / 2**20, 1)
    record["operator_rss_peak_so_far_mib"] = round(max(s.rss.peaks.values()) / 2**20, 1)
    record["operator_vmhwm_mib"] = round(
        int(
            next(
                line for line in Path(f"/proc/{s.op.pid}/status").read_text().splitlines() if line.startswith("VmHWM:")
            ).split()[1]
        )
        / 1024,
        1,
    )
    print(f"[bench] memory: {json.dumps(record)}", flush=True)
    if s.op.trace_out is not None:
        record["heap"] = s.op.heap_report()
        print(f"[bench] traced heap: {record['heap']['traced_mib']} MiB; top lines:", flush=True)
        for line in record["heap"]["top_lines"][:25]:
            print(f"  {line['mib']:8.2f} MiB {line['count']:8d}  {line['where']}", flush=True)
    return record


def fanout_phase(s: Session, width: int, timeout: float) -> dict[str, Any]:
    ns = make_namespace(s.api, "fanout", s.minio)
    pipeline_bytes = create_pipeline(
        s.api,
        ns,
        "wide",
        [container_step("fan", forEach={"items": list(range(width))}), container_step("gather", ["fan"])],
    )
    custom = k8s_client.CustomObjectsApi(s.api)
    record: dict[str, Any] = {"width": width, "pipeline_bytes": pipeline_bytes}
    sizes: list[int] = []
    last: dict[str, Any] = {}
    with s.phase("fanout", record):
        t0 = time.time()
        create_runs(s.api, ns, "wide", 1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp: Any = custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, "runs", "wide-00000", _preload_content=False
            )
            raw = resp.data
            sizes.append(len(raw))
            last = json.loads(raw)
            if last.get("status", {}).get("phase") in FINAL:
                break
            time.sleep(2)
        record["seconds"] = round(time.time() - t0, 1)
    status = last.get("status", {})
    record["phase"] = status.get("phase")
    record["progress"] = status.get("progress")
    record["fan_out_status"] = next((st.get("fanOut") for st in status.get("steps", []) if st["name"] == "fan"), None)
    record["run_bytes_as_served"] = sizes[-1] if sizes else None
    record["run_bytes_max_seen"] = max(sizes) if sizes else None
    compact = dict(last)
    compact["metadata"] = {k: v for k, v in last.get("metadata", {}).items() if k != "managedFields"}
    record["run_bytes_without_managed_fields"] = len(json.dumps(compact, separators=(",", ":")))
    record["run_status_bytes"] = len(json.dumps(status, separators=(",", ":")))
    jobs: Any = k8s_client.BatchV1Api(s.api).list_namespaced_job(ns, _preload_content=False)
    record["jobs_created"] = len(json.loads(jobs.data)["items"])
    return record


# ---------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    mem_kib = int(
        next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")).split()[1]
    )
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def fmt(value: float | None, unit: str = "s", digits: int = 3) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value * 1000:.0f} ms"
    return f"{value:.{digits}f} {unit}".strip()


def table(results: dict[str, Any]) -> str:
    lines = [
        "| concurrent Runs | steps measured | API timestamps p50 / p99 (1 s res.) | watch p50 / p99 "
        "| of which operator (Job Complete → next Job) p50 / p99 | operator histogram p50 / p99 (n) |",
        "|---|---|---|---|---|---|",
    ]
    for o in results.get("overhead", []):
        a, w, op, h = o["api_timestamps"], o["watch"], o["watch_operator_part"], o["operator_histogram"]
        lines.append(
            f"| {o['concurrency']} ({o['runs_succeeded']} Succeeded) | {w['n']} "
            f"| {fmt(a['p50'], 's', 0)} / {fmt(a['p99'], 's', 0)} "
            f"| {fmt(w['p50'], 'ms')} / {fmt(w['p99'], 'ms')} "
            f"| {fmt(op['p50'], 'ms')} / {fmt(op['p99'], 'ms')} "
            f"| {fmt(h['p50'], 'ms')} / {fmt(h['p99'], 'ms')} ({h['count']:.0f}) |"
        )
    t = results.get("throughput")
    if t:
        lines += [
            "",
            f"Throughput: {t.get('succeeded')}/{t['runs']} single-step Runs Succeeded; "
            f"{t.get('runs_per_minute')} Runs/min overall (middle 80 %: {t.get('runs_per_minute_middle_80pct')}), "
            f"first create → last finished {t.get('first_create_to_last_finished_s')} s "
            f"(creating them took {t.get('create_seconds')} s).",
        ]
    m = results.get("memory")
    if m:
        lines.append(
            f"Memory: operator VmRSS {m['operator_rss_mib']} MiB with {m['runs_existing']} Runs existing "
            f"({m['runs_unfinished']} unfinished, {m['jobs_existing']} Jobs); peak VmRSS so far "
            f"{m['operator_rss_peak_so_far_mib']} MiB (VmHWM {m['operator_vmhwm_mib']} MiB)."
        )
    f = results.get("fanout")
    if f:
        lines.append(
            f"Fan-out: {f['width']}-way Run {f['phase']} ({f['progress']}) after {f['seconds']} s; Run object "
            f"{f['run_bytes_as_served']} B as served ({f['run_bytes_without_managed_fields']} B without managedFields, "
            f"status {f['run_status_bytes']} B, max seen {f['run_bytes_max_seen']} B);"
            f" Pipeline {f['pipeline_bytes']} B."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,50,200", help="concurrent Runs per overhead phase (comma list)")
    parser.add_argument("--chain", type=int, default=3, help="steps per Run in the overhead phases")
    parser.add_argument("--runs-per-minute", type=int, default=1000, metavar="N", help="Runs in the throughput phase")
    parser.add_argument("--memory-runs", type=int, default=1000, help="Runs that must exist for the memory reading")
    parser.add_argument("--fanout", type=int, default=1000, help="items of the fan-out Run (0: skip)")
    parser.add_argument("--nodes", type=int, default=4, help="fake kwok Nodes")
    parser.add_argument("--phase-timeout", type=float, default=300, help="seconds each phase may take")
    parser.add_argument(
        "--resync-seconds", type=float, default=None, help="CONVEYOR_RESYNC_SECONDS (default: the operator's)"
    )
    parser.add_argument("--skip", default="", help="phases to skip: overhead,throughput,memory,fanout")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "operator_bench.json")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) afterwards")
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="run the operator under tracemalloc and report its Python heap at the memory reading (slower)",
    )
    parser.add_argument(
        "--operator-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the operator"
    )
    args = parser.parse_args(argv)
    skip = {p.strip() for p in args.skip.split(",") if p.strip()}

    results: dict[str, Any] = {
        "command": " ".join(
            [".venv/bin/python", "bench/operator_bench.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    began = time.monotonic()
    cp = ControlPlane(Binaries.locate(), keep=args.keep).start()
    print(f"[bench] control plane up in {cp.startup_seconds:.1f}s; logs in {cp.log_dir}", flush=True)
    minio = kwok = op = None
    try:
        minio = MinioServer(cp.binaries, cp.log_dir).start()
        kwok = KwokProcess(cp, STAGES).start()
        apply_crds(cp, crd_files())
        with api_client(cp) as api:
            results["nodes"] = create_fake_nodes(api, args.nodes)
        extra_env = dict(item.split("=", 1) for item in args.operator_env)
        trace_out = cp.log_dir / "operator-heap.json" if args.trace_memory else None
        op = OperatorProcess(cp, minio, args.resync_seconds, trace_out=trace_out, extra_env=extra_env).start()
        results["operator_env"] = extra_env
        session = Session(cp, minio, kwok, op)
        time.sleep(2)
        results["operator_rss_idle_mib"] = round(rss_bytes(op.pid) / 2**20, 1)
        if "overhead" not in skip:
            results["overhead"] = [
                overhead_phase(session, int(c), args.chain, args.phase_timeout) for c in args.concurrency.split(",")
            ]
        if "throughput" not in skip:
            results["throughput"] = throughput_phase(session, args.runs_per_minute, args.phase_timeout)
        if "memory" not in skip:
            results["memory"] = memory_phase(session, args.memory_runs, args.phase_timeout)
        if "fanout" not in skip and args.fanout:
            results["fanout"] = fanout_phase(session, args.fanout, args.phase_timeout)
        results["operator_rss_peaks_mib"] = {k: round(v / 2**20, 1) for k, v in session.rss.peaks.items()}
        session.rss.stop()
    finally:
        for proc in (op, kwok, minio):
            if proc is not None:
                proc.stop()
        cp.stop()
    results["total_seconds"] = round(time.monotonic() - began, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\n[bench] {results['total_seconds']} s in all; JSON in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
