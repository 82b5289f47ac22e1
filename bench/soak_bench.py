"""Soak: 1,000 Runs through one operator on kwok nodes, then the model server under an hour-equivalent load.

Part 1 (operator): the machinery of bench/operator_bench.py (the real control plane of tests/testenv,
MinIO, kwok completing every step pod at once, one `python -m conveyor.controller --standalone`).
Runs of a two-step Pipeline are created at a fixed rate (`--rate` per minute) until `--runs` exist;
a poller records each Run's final phase, and, with `--retain N`, deletes finished Runs beyond the
newest N (as a retention policy would; their Jobs go with them through owner references), so what is
measured is the operator's memory over many Runs, not the size of an ever-growing cache. The
operator's VmRSS is sampled every second; the slope is a least-squares fit of RSS against Runs
finished, after the first `--warmup-runs`. Once every Run is created, the poller waits until all are
final; if no Run becomes final for `--stall-timeout` seconds, the unfinished ones are stuck (a Run
that is slow but still moving is not).

Part 2 (model server): an hour of traffic at `--hour-rate` requests per second, compressed
`--compression` times: the same request count at `hour-rate x compression` per second for
`3600 / compression` seconds. Every `--switch-minutes` (in hour time) the model changes the way a
rolling update does it: a new server process for the new model starts; a prober (a readiness probe
every 0.5 s) adds it to the endpoints once `/v2/models/bc/ready` answers 200; then the old server is
sent SIGTERM and leaves the endpoints `--propagation-delay` seconds later (endpoint updates are not
instant, which is what the server's drain period is for). The load generator is open-loop (requests
leave at fixed times whether or not earlier ones came back), routes only to endpoints, never retries,
and counts every non-200 answer, wrong output and dropped connection. Each server's VmRSS is sampled
twice a second; its slope is fitted over the time it was an endpoint, after `--server-warmup` seconds.

Usage: .venv/bin/python bench/soak_bench.py [--runs 1000] [--rate 300] [--hour-rate 6] [--compression 15] ...
Results: bench/results/soak-<date>.json and a summary printed for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "operator"))

import operator_bench as ob  # noqa: E402  # also puts tests/ on sys.path
from kubernetes import client as k8s_client  # noqa: E402

from testenv.binaries import Binaries  # noqa: E402
from testenv.controlplane import ControlPlane  # noqa: E402
from testenv.crds import apply_crds, crd_files  # noqa: E402
from testenv.minio import MinioServer  # noqa: E402
from testenv.processes import ServerProcess, free_port, wait_until  # noqa: E402

MIB = 2**20


# ---------------------------------------------------------------------------------------- numbers


def fit_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys against xs (None with fewer than 3 points or no spread in xs)."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def source_state(label: str | None) -> dict[str, Any]:
    """Which code was measured: the commit, whether operator/ differed from it, and what `--label` says."""

    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "operator_dirty": bool(git("status", "--porcelain", "--", "operator")),
        "label": label,
    }


# ---------------------------------------------------------------------------------------- part 1: operator


class OperatorSampler(threading.Thread):
    """The operator's VmRSS every second, with how many Runs were created and finished at that moment."""

    def __init__(self, pid: int, soak: RunSoak) -> None:
        super().__init__(daemon=True, name="operator-rss")
        self.pid, self.soak = pid, soak
        self.samples: list[tuple[float, int, int, int]] = []  # (t, rss, created, finished)
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._halt.wait(1.0):
            with contextlib.suppress(OSError, RuntimeError):
                rss = ob.rss_bytes(self.pid)
                self.samples.append((time.monotonic() - t0, rss, len(self.soak.created), len(self.soak.finished)))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


@dataclass
class RunSoak:
    created: dict[str, float] = field(default_factory=dict)
    finished: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (phase, observed at)
    deleted: int = 0
    not_succeeded: dict[str, str] = field(default_factory=dict)  # name -> the Succeeded condition's reason and message
    create_errors: list[str] = field(default_factory=list)


def _why(run: dict[str, Any]) -> str:
    for condition in run.get("status", {}).get("conditions", []):
        if condition.get("type") == "Succeeded":
            return f"{condition.get('reason')}: {str(condition.get('message'))[:300]}"
    return "no Succeeded condition"


def create_at_rate(
    api: k8s_client.ApiClient, ns: str, pipeline: str, count: int, per_minute: float, soak: RunSoak
) -> None:
    custom = k8s_client.CustomObjectsApi(api)
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i * 60.0 / per_minute - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        name = f"{pipeline}-{i:05d}"
        body = {
            "apiVersion": f"{ob.GROUP}/{ob.VERSION}",
            "kind": "Run",
            "metadata": {"name": name},
            "spec": {"pipelineRef": {"name": pipeline}},
        }
        try:
            custom.create_namespaced_custom_object(ob.GROUP, ob.VERSION, ns, "runs", body, _preload_content=False)
        except Exception as exc:  # recorded, and the Run counts as never created
            soak.create_errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        soak.created[name] = time.monotonic()


def operator_soak(args: argparse.Namespace) -> dict[str, Any]:
    record: dict[str, Any] = {
        "runs": args.runs,
        "rate_per_minute": args.rate,
        "steps_per_run": 2,
        "retain_finished": args.retain,
        "warmup_runs": args.warmup_runs,
        "nodes": args.nodes,
    }
    cp = ControlPlane(Binaries.locate(), keep=args.keep).start()
    print(f"[soak] control plane up in {cp.startup_seconds:.1f}s", flush=True)
    minio = kwok = op = None
    sampler: OperatorSampler | None = None
    try:
        minio = MinioServer(cp.binaries, cp.log_dir).start()
        kwok = ob.KwokProcess(cp, ob.STAGES).start()
        apply_crds(cp, crd_files())
        api = ob.api_client(cp)
        ob.create_fake_nodes(api, args.nodes)
        op = ob.OperatorProcess(cp, minio, None).start()
        ns = ob.make_namespace(api, "soak", minio)
        ob.create_pipeline(api, ns, "soak", [ob.container_step("first"), ob.container_step("second", ["first"])])
        time.sleep(2)
        record["operator_rss_idle_mib"] = round(ob.rss_bytes(op.pid) / MIB, 1)
        soak = RunSoak()
        sampler = OperatorSampler(op.pid, soak)
        sampler.start()
        custom = k8s_client.CustomObjectsApi(api)
        began = time.monotonic()
        creator = threading.Thread(
            target=create_at_rate, args=(api, ns, "soak", args.runs, args.rate, soak), name="creator", daemon=True
        )
        creator.start()
        order: list[str] = []  # finished Runs, oldest first, not yet deleted
        last_progress = began
        last_print = began
        while True:
            for run in ob.list_runs(api, ns):
                name = run["metadata"]["name"]
                phase = run.get("status", {}).get("phase")
                if phase in ob.FINAL and name not in soak.finished:
                    soak.finished[name] = (phase, time.monotonic())
                    last_progress = time.monotonic()
                    order.append(name)
                    if phase != "Succeeded":
                        soak.not_succeeded[name] = _why(run)
            while args.retain and len(order) > args.retain:
                victim = order.pop(0)
                with contextlib.suppress(k8s_client.ApiException):
                    custom.delete_namespaced_custom_object(
                        ob.GROUP, ob.VERSION, ns, "runs", victim, body={"propagationPolicy": "Background"}
                    )
                    soak.deleted += 1
            if not creator.is_alive():
                stalled = time.monotonic() - last_progress > args.stall_timeout
                if len(soak.finished) >= len(soak.created) or stalled:
                    break
            if time.monotonic() - last_print >= 20:
                last_print = time.monotonic()
                print(
                    f"[soak] {time.monotonic() - began:6.1f}s created {len(soak.created)} finished {len(soak.finished)}"
                    f" rss {sampler.samples[-1][1] / MIB if sampler.samples else 0:.0f} MiB",
                    flush=True,
                )
            time.sleep(2.0)
        record["wall_seconds"] = round(time.monotonic() - began, 1)
        time.sleep(args.settle)  # trailing passes, then the resting RSS
        sampler.stop()
        record["runs_existing_at_end"] = len(ob.list_runs(api, ns))
        record["runs_deleted"] = soak.deleted
        jobs: Any = k8s_client.BatchV1Api(api).list_namespaced_job(ns, _preload_content=False)
        record["jobs_existing_at_end"] = len(json.loads(jobs.data)["items"])
    finally:
        if sampler is not None:
            sampler.stop()
        for proc in (op, kwok, minio):
            if proc is not None:
                proc.stop()
        cp.stop()
    phases: dict[str, int] = {}
    for phase, _ in soak.finished.values():
        phases[phase] = phases.get(phase, 0) + 1
    latencies = [at - soak.created[name] for name, (_, at) in soak.finished.items() if name in soak.created]
    stuck = sorted(set(soak.created) - set(soak.finished))
    samples = sampler.samples
    warm = [s for s in samples if s[3] >= args.warmup_runs]
    per_run = fit_slope([s[3] for s in warm], [s[1] / MIB for s in warm])
    per_minute = fit_slope([s[0] / 60 for s in warm], [s[1] / MIB for s in warm])
    in_flight = [s[2] - s[3] for s in warm]
    record.update(
        {
            "created": len(soak.created),
            "create_errors": soak.create_errors[:20],
            "final_phases": phases,
            "not_succeeded_reasons": sorted(set(soak.not_succeeded.values()))[:10],
            "stuck": len(stuck),
            "stuck_names": stuck[:20],
            "create_to_final_seen_s": ob._dist(latencies),  # observed by a 2 s poll
            "rss_samples": len(samples),
            "rss_fit_samples": len(warm),
            "rss_slope_mib_per_100_runs": rounded(per_run * 100 if per_run is not None else None, 3),
            "rss_slope_mib_per_minute": rounded(per_minute, 3),
            "in_flight_runs_during_fit": {"max": max(in_flight, default=0), "last": in_flight[-1] if in_flight else 0},
            "rss_at_warmup_mib": round(warm[0][1] / MIB, 1) if warm else None,
            "rss_at_end_mib": round(samples[-1][1] / MIB, 1) if samples else None,
            "rss_peak_mib": round(max(s[1] for s in samples) / MIB, 1) if samples else None,
            "rss_series": [
                (round(t, 1), round(r / MIB, 1), c, f) for t, r, c, f in samples[:: max(1, len(samples) // 120)]
            ],
        }
    )
    print(f"[soak] operator: {json.dumps({k: v for k, v in record.items() if k != 'rss_series'})}", flush=True)
    return record


# ---------------------------------------------------------------------------------------- part 2: serving

MODEL = "bc"


def train_models(out: Path, count: int) -> list[tuple[str, Path, Any]]:
    """`count` breast-cancer models in the train component's shape (different C, so different digests)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_breast_cancer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler

    from conveyor.components.modelio import ArtifactMetadata, FeatureSpec, save_artifact
    from conveyor.storage.digest import sha256_file

    data = load_breast_cancer(as_frame=True)
    frame, target = data.data, data.target
    names = list(frame.columns)
    models = []
    for i in range(count):
        c = [1.0, 0.3, 3.0, 0.1][i % 4] * (1 + i // 4)
        pipeline = Pipeline(
            [
                ("preprocess", ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), names)])),
                ("model", LogisticRegression(C=c, max_iter=2000)),
            ]
        ).fit(frame, target)
        meta = ArtifactMetadata(
            kind="model",
            estimator="sklearn.linear_model.LogisticRegression",
            task="classification",
            label="target",
            classes=[0, 1],
            inputs=[FeatureSpec(name=n, dtype="float64") for n in names],
        )
        path = out / f"model-{i}.model"
        save_artifact(pipeline, path, meta)
        models.append((sha256_file(path), path, frame.to_numpy()))
    return models


@dataclass
class ModelServer:
    index: int
    digest: str
    port: int
    process: ServerProcess
    started: float
    ready_at: float | None = None
    endpoint_at: float | None = None
    sigterm_at: float | None = None
    exit_at: float | None = None
    exit_code: int | None = None
    served: int = 0
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss, served so far)

    @property
    def version(self) -> str:
        return self.digest.split(":", 1)[1][:12]

    def model_ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
        try:
            conn.request("GET", f"/v2/models/{MODEL}/ready")
            reply = conn.getresponse()
            reply.read()
            return reply.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()


def start_server(index: int, digest: str, path: Path, work: Path, drain_seconds: float, t0: float) -> ModelServer:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "conveyor.serving",
        "--model-name",
        MODEL,
        "--model-uri",
        path.as_uri(),
        "--model-digest",
        digest,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--work-dir",
        str(work),
        "--drain-seconds",
        str(drain_seconds),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = ServerProcess(f"server-{index}", argv, work / f"server-{index}.log", env=env).start()
    return ModelServer(index, digest, port, process, time.monotonic() - t0)


class Endpoints:
    """What a Service's endpoints would list: servers whose model readiness probe passes, minus terminating ones."""

    def __init__(self, t0: float, period: float = 0.5) -> None:
        self.t0, self.period = t0, period
        self.servers: list[ModelServer] = []
        self.removed: set[int] = set()
        self.ready: tuple[ModelServer, ...] = ()
        self.lock = threading.Lock()
        self._halt = threading.Event()
        self.thread = threading.Thread(target=self._probe, daemon=True, name="prober")

    def _probe(self) -> None:
        while not self._halt.wait(self.period):
            with self.lock:
                candidates = [s for s in self.servers if s.index not in self.removed and s.exit_at is None]
            ready = []
            for server in candidates:
                if server.model_ready():
                    now = time.monotonic() - self.t0
                    server.ready_at = server.ready_at or now
                    server.endpoint_at = server.endpoint_at or now
                    ready.append(server)
            with self.lock:
                self.ready = tuple(s for s in ready if s.index not in self.removed)

    def remove(self, server: ModelServer) -> None:
        with self.lock:
            self.removed.add(server.index)
            self.ready = tuple(s for s in self.ready if s.index != server.index)

    def add(self, server: ModelServer) -> None:
        with self.lock:
            self.servers.append(server)

    def stop(self) -> None:
        self._halt.set()
        self.thread.join(timeout=5)


@dataclass
class LoadResult:
    scheduled: int = 0
    sent: int = 0
    ok: int = 0
    http_errors: dict[str, int] = field(default_factory=dict)
    wrong_output: int = 0
    dropped: int = 0
    no_endpoint: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    by_version: dict[str, int] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(message)


class LoadGenerator:
    """Open loop: request i leaves at start + i / rate, on whichever worker is free; no retries."""

    def __init__(
        self, endpoints: Endpoints, bodies: list[tuple[bytes, int]], rate: float, count: int, workers: int
    ) -> None:
        self.endpoints, self.bodies, self.rate, self.count = endpoints, bodies, rate, count
        self.result = LoadResult()
        self.lock = threading.Lock()
        self.tickets: queue.Queue[tuple[int, float] | None] = queue.Queue()
        self.workers = [threading.Thread(target=self._work, daemon=True, name=f"load-{w}") for w in range(workers)]
        self.scheduler = threading.Thread(target=self._schedule, daemon=True, name="scheduler")
        self.rr = itertools.count()

    def start(self) -> LoadGenerator:
        for w in self.workers:
            w.start()
        self.scheduler.start()
        return self

    def _schedule(self) -> None:
        start = time.monotonic()
        for i in range(self.count):
            due = start + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.tickets.put((i, due))
            self.result.scheduled += 1
        for _ in self.workers:
            self.tickets.put(None)

    def join(self) -> None:
        self.scheduler.join()
        for w in self.workers:
            w.join()

    def _work(self) -> None:
        connections: dict[int, http.client.HTTPConnection] = {}
        while (ticket := self.tickets.get()) is not None:
            i, due = ticket
            ready = self.endpoints.ready
            if not ready:
                with self.lock:
                    self.result.no_endpoint += 1
                    self.result.fail(f"request {i}: no ready endpoint")
                continue
            server = ready[next(self.rr) % len(ready)]
            body, rows = self.bodies[i % len(self.bodies)]
            began = time.monotonic()
            conn = connections.get(server.port)
            if conn is None:
                conn = connections[server.port] = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                conn.request(
                    "POST", f"/v2/models/{MODEL}/infer", body=body, headers={"Content-Type": "application/json"}
                )
                reply = conn.getresponse()
                data = reply.read()
                closing = (reply.getheader("connection") or "").lower() == "close"
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                connections.pop(server.port, None)
                with self.lock:
                    self.result.sent += 1
                    self.result.dropped += 1
                    self.result.fail(f"request {i} to server {server.index}: {type(exc).__name__}: {exc}")
                continue
            elapsed = time.monotonic() - began
            if closing:
                conn.close()
                connections.pop(server.port, None)
            with self.lock:
                result = self.result
                result.sent += 1
                result.lateness.append(began - due)
                server.served += 1
                if reply.status != 200:
                    result.http_errors[str(reply.status)] = result.http_errors.get(str(reply.status), 0) + 1
                    result.fail(f"request {i} to server {server.index}: {reply.status} {data[:200]!r}")
                    continue
                try:
                    doc = json.loads(data)
                    good = doc["outputs"][0]["shape"] == [rows] and len(doc["outputs"][0]["data"]) == rows
                except (ValueError, KeyError, IndexError, TypeError):
                    good = False
                if not good:
                    result.wrong_output += 1
                    result.fail(f"request {i}: wrong output {data[:200]!r}")
                    continue
                result.ok += 1
                result.latencies.append(elapsed)
                result.by_version[doc["model_version"]] = result.by_version.get(doc["model_version"], 0) + 1
        for conn in connections.values():
            conn.close()


class ServerSampler(threading.Thread):
    def __init__(self, endpoints: Endpoints, t0: float) -> None:
        super().__init__(daemon=True, name="server-rss")
        self.endpoints, self.t0 = endpoints, t0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.5):
            with self.endpoints.lock:
                servers = list(self.endpoints.servers)
            for server in servers:
                if server.exit_at is None:
                    with contextlib.suppress(OSError, RuntimeError):
                        server.samples.append(
                            (time.monotonic() - self.t0, ob.rss_bytes(server.process.pid), server.served)
                        )

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def serving_soak(args: argparse.Namespace) -> dict[str, Any]:
    rate = args.hour_rate * args.compression
    duration = 3600.0 / args.compression
    switch_every = args.switch_minutes * 60.0 / args.compression
    count = round(rate * duration)
    record: dict[str, Any] = {
        "hour_rate_per_s": args.hour_rate,
        "compression": args.compression,
        "rate_per_s": rate,
        "duration_s": duration,
        "requests_scheduled": count,
        "switch_every_hour_minutes": args.switch_minutes,
        "switch_every_s": round(switch_every, 2),
        "drain_seconds": args.drain_seconds,
        "propagation_delay_s": args.propagation_delay,
        "server_warmup_s": args.server_warmup,
    }
    work = Path(tempfile.mkdtemp(prefix="conveyor-soak-serving-"))
    models = train_models(work, args.models)
    rows = models[0][2]
    bodies = []
    for i in range(64):
        n = 1 + i % 4
        chunk = rows[(i * 7) % (len(rows) - n) :][:n]
        doc = {
            "inputs": [
                {"name": "input-0", "shape": [n, chunk.shape[1]], "datatype": "FP64", "data": chunk.ravel().tolist()}
            ]
        }
        bodies.append((json.dumps(doc).encode(), n))
    t0 = time.monotonic()
    endpoints = Endpoints(t0)
    servers: list[ModelServer] = []
    sampler = ServerSampler(endpoints, t0)
    switches: list[dict[str, Any]] = []
    try:
        first = start_server(0, models[0][0], models[0][1], work, args.drain_seconds, t0)
        servers.append(first)
        endpoints.add(first)
        endpoints.thread.start()
        sampler.start()
        wait_until(lambda: first in endpoints.ready, timeout=180, what="the first server ready", process=first.process)
        load = LoadGenerator(endpoints, bodies, rate, count, args.workers).start()
        load_began = time.monotonic()
        print(
            f"[soak] serving: {count} requests at {rate:g}/s for {duration:g}s, a switch every {switch_every:g}s",
            flush=True,
        )
        k = 1
        # The last switch leaves a whole interval before the end, so its new server serves too.
        while (next_switch := load_began + k * switch_every) + switch_every < load_began + duration:
            while time.monotonic() < next_switch:
                time.sleep(0.1)
            old = servers[-1]
            digest, path, _ = models[k % len(models)]
            began = time.monotonic()
            new = start_server(k, digest, path, work, args.drain_seconds, t0)
            servers.append(new)
            endpoints.add(new)
            wait_until(lambda n=new: n in endpoints.ready, timeout=180, what=f"server {k} ready", process=new.process)
            ready_after = time.monotonic() - began
            os.kill(old.process.pid, signal.SIGTERM)
            old.sigterm_at = time.monotonic() - t0
            threading.Timer(args.propagation_delay, endpoints.remove, args=(old,)).start()
            switches.append(
                {
                    "at_s": round(began - load_began, 1),
                    "from": old.index,
                    "to": new.index,
                    "new_ready_after_s": round(ready_after, 2),
                }
            )
            print(
                f"[soak] switch {k}: server {old.index} -> {new.index} (new ready after {ready_after:.1f}s); "
                f"sent {load.result.sent}",
                flush=True,
            )
            k += 1
        load.join()
        record["load_seconds"] = round(time.monotonic() - load_began, 1)
        last = servers[-1]
        os.kill(last.process.pid, signal.SIGTERM)
        last.sigterm_at = time.monotonic() - t0
        endpoints.remove(last)
        for server in servers:
            with contextlib.suppress(TimeoutError):
                wait_until(
                    lambda s=server: s.process.exit_code() is not None, timeout=60, what=f"server {server.index} exit"
                )
            server.exit_code = server.process.exit_code()
            server.exit_at = time.monotonic() - t0
    finally:
        sampler.stop()
        endpoints.stop()
        for server in servers:
            server.process.stop()
    result = load.result
    record.update(
        {
            "switches": switches,
            "sent": result.sent,
            "ok": result.ok,
            "http_errors": result.http_errors,
            "wrong_output": result.wrong_output,
            "dropped": result.dropped,
            "no_endpoint": result.no_endpoint,
            "failed_total": sum(result.http_errors.values())
            + result.wrong_output
            + result.dropped
            + result.no_endpoint,
            "failures_sample": result.failures[:20],
            "latency_s": ob._dist(result.latencies),
            "lateness_s": ob._dist(result.lateness),
            "served_by_version": result.by_version,
        }
    )
    per_server = []
    for server in servers:
        start = (server.endpoint_at or 0) + args.server_warmup
        end = server.sigterm_at or float("inf")
        window = [s for s in server.samples if start <= s[0] <= end]
        slope_t = fit_slope([s[0] / 60 for s in window], [s[1] / MIB for s in window])
        slope_n = fit_slope([float(s[2]) for s in window], [s[1] / MIB for s in window])
        per_server.append(
            {
                "server": server.index,
                "version": server.version,
                "endpoint_s": [rounded(server.endpoint_at, 1), rounded(server.sigterm_at, 1)],
                "served": server.served,
                "exit_code": server.exit_code,
                "rss_fit_samples": len(window),
                "rss_first_mib": round(window[0][1] / MIB, 1) if window else None,
                "rss_last_mib": round(window[-1][1] / MIB, 1) if window else None,
                "rss_peak_mib": round(max(s[1] for s in server.samples) / MIB, 1) if server.samples else None,
                "rss_slope_mib_per_minute": rounded(slope_t, 3),
                "rss_slope_mib_per_10k_requests": rounded(slope_n * 10_000 if slope_n is not None else None, 3),
            }
        )
    record["servers"] = per_server
    print(f"[soak] serving: {json.dumps({k: v for k, v in record.items() if k != 'servers'})}", flush=True)
    return record


# ---------------------------------------------------------------------------------------- report


def summary(results: dict[str, Any]) -> str:
    lines = []
    o = results.get("operator")
    if o:
        latency = o["create_to_final_seen_s"]
        lines += [
            f"Operator: {o['created']} Runs created at {o['rate_per_minute']}/min ({o['steps_per_run']} steps each), "
            f"final phases {o['final_phases']}, stuck {o['stuck']}; wall {o['wall_seconds']} s; "
            f"create -> final seen p50 {rounded(latency['p50'])} s, "
            f"p99 {rounded(latency['p99'])} s, max {rounded(latency['max'])} s.",
            f"Operator VmRSS: idle {o['operator_rss_idle_mib']} MiB, at warm-up ({o['warmup_runs']} Runs) "
            f"{o['rss_at_warmup_mib']} MiB, end {o['rss_at_end_mib']} MiB, peak {o['rss_peak_mib']} MiB; slope "
            f"{o['rss_slope_mib_per_100_runs']} MiB per 100 Runs ({o['rss_slope_mib_per_minute']} MiB/min, "
            f"{o['rss_fit_samples']} samples); retain {o['retain_finished']} finished Runs "
            f"({o['runs_deleted']} deleted, {o['runs_existing_at_end']} existing at the end); Runs in flight "
            f"during the fit: at most {o['in_flight_runs_during_fit']['max']}.",
        ]
    s = results.get("serving")
    if s:
        lines += [
            f"Serving: {s['sent']} of {s['requests_scheduled']} requests sent at {s['rate_per_s']:g}/s "
            f"({s['hour_rate_per_s']:g}/s for an hour, compressed {s['compression']:g}x), {len(s['switches'])} model "
            f"switches; ok {s['ok']}, failed {s['failed_total']} (HTTP errors {s['http_errors']}, dropped "
            f"{s['dropped']}, wrong output {s['wrong_output']}, no endpoint {s['no_endpoint']}); latency p50 "
            f"{fmt_ms(s['latency_s']['p50'])}, p99 {fmt_ms(s['latency_s']['p99'])}, "
            f"max {fmt_ms(s['latency_s']['max'])}.",
            "",
            "| server | served | exit | RSS first / last / peak MiB | slope MiB/min | slope MiB per 10k req |",
            "|---|---|---|---|---|---|",
        ]
        for srv in s["servers"]:
            lines.append(
                f"| {srv['server']} ({srv['version']}) | {srv['served']} | {srv['exit_code']} "
                f"| {srv['rss_first_mib']} / "
                f"{srv['rss_last_mib']} / {srv['rss_peak_mib']} | {srv['rss_slope_mib_per_minute']} "
                f"| {srv['rss_slope_mib_per_10k_requests']} |"
            )
    return "\n".join(lines)


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="Runs to put through the operator (0: skip part 1)")
    parser.add_argument("--rate", type=float, default=150, help="Runs created per minute")
    parser.add_argument("--retain", type=int, default=100, help="finished Runs kept; older ones deleted (0: keep all)")
    parser.add_argument("--warmup-runs", type=int, default=200, help="Runs finished before the RSS fit starts")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=120,
        help="seconds without any Run finishing (after the last create) before the unfinished are stuck",
    )
    parser.add_argument("--settle", type=float, default=10, help="seconds sampled after the last Run finished")
    parser.add_argument("--nodes", type=int, default=4, help="fake kwok Nodes")
    parser.add_argument(
        "--hour-rate", type=float, default=6, help="requests per second of the hour being compressed (0: skip part 2)"
    )
    parser.add_argument("--compression", type=float, default=20, help="how many times faster than real time")
    parser.add_argument("--switch-minutes", type=float, default=5, help="a model switch every this many hour-minutes")
    parser.add_argument("--models", type=int, default=3, help="distinct models the switches rotate through")
    parser.add_argument("--drain-seconds", type=float, default=3, help="the servers' --drain-seconds")
    parser.add_argument(
        "--propagation-delay", type=float, default=1.0, help="seconds a terminating server stays an endpoint"
    )
    parser.add_argument(
        "--server-warmup", type=float, default=3, help="seconds of each server's endpoint time left out of its fit"
    )
    parser.add_argument("--workers", type=int, default=16, help="load generator threads")
    parser.add_argument("--label", default=None, help="recorded with the results, e.g. which tree was measured")
    parser.add_argument("--keep", action="store_true", help="keep the control plane's work dir (logs) afterwards")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/soak-<date>.json")
    args = parser.parse_args(argv)
    # Child processes (operator, model servers) import the same tree this script belongs to.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "operator"), os.environ.get("PYTHONPATH")]))
    date = datetime.now(UTC)
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/soak_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": date.isoformat(timespec="seconds"),
        "machine": ob.machine(),
        "source": source_state(args.label),
    }
    began = time.monotonic()
    if args.runs:
        results["operator"] = operator_soak(args)
    if args.hour_rate:
        results["serving"] = serving_soak(args)
    results["total_seconds"] = round(time.monotonic() - began, 1)
    out = args.out or BENCH / "results" / f"soak-{date:%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(summary(results))
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\n[soak] {results['total_seconds']} s in all; JSON in {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
