"""The real-node benchmark: how fast the kubelet node of tests/testenv starts and starts pods.

A container stack of its own (control plane serving on the node bridge's gateway, MinIO, the
kubelet with its own containerd; see tests/testenv/kubeletnode.py) is started and measured:

  node          seconds from KubeletNode.start() to the Node Ready (containerd up, the pause and
                test images imported, the kubelet registered), and the whole stack's start-up
  pod start     PODS pods of the node-test image created back to back, ROUNDS times: each pod's
                latency is its create call → the pod first seen Running (polled every 50 ms);
                p50/p99 are nearest-rank over all rounds' pods, and per round
  memory        PSS of containerd, its shims and the kubelet, idle and with PODS pods running
  step overhead (unless --no-runs) the project's images built (hack/images.sh) and the chart
                installed by helm (testenv/release.py: two operator pods from the operator image),
                then RUNS Runs one after another of a CHAIN-step Pipeline of container steps in the
                step image; per-step overhead = a step's pod seen terminated by this benchmark's
                watch → the next step's container seen running (sub-second), split at the next pod's
                first watch event (before: the operator and the Job controller; after: the scheduler
                and the node), and the same from the pods' own timestamps (terminated.finishedAt →
                the next startedAt: whole seconds)

Usage: .venv/bin/python bench/node_bench.py [--pods 20] [--rounds 3] [--runs 4] [--chain 5] [--no-runs]
                                            [--json-out FILE]
Prints one JSON document (and writes it to --json-out when given).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kubernetes import client as k8s_client  # noqa: E402
from kubernetes import watch as k8s_watch  # noqa: E402

from testenv.binaries import pinned_versions  # noqa: E402
from testenv.containerstack import ContainerStack, container_stack  # noqa: E402
from testenv.images import build_project_images  # noqa: E402
from testenv.processes import wait_until  # noqa: E402
from testenv.release import install  # noqa: E402


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (no interpolation: with few samples p99 is the maximum)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, Any]:
    def seconds(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "n": len(values),
        "p50_s": seconds(quantile(values, 0.5)),
        "p99_s": seconds(quantile(values, 0.99)),
        "max_s": seconds(max(values) if values else None),
    }


def pss_mib(pids: list[int]) -> float:
    """Proportional set size of ``pids`` together, in MiB."""
    total_kib = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total_kib += sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return round(total_kib / 1024, 1)


def runtime_pids(stack: ContainerStack) -> list[int]:
    """containerd, the kubelet and the shims of this node's containerd."""
    node = stack.node
    assert node.containerd is not None and node.kubelet is not None
    socket = str(node.containerd_socket).encode()
    shims = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"containerd-shim-runc-v2") and socket in argv:
                shims.append(int(proc.name))
    return [node.containerd.pid, node.kubelet.pid, *shims]


def pod(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "node"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": ["sleep", "forever"],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
            ],
        },
    }


def start_round(core: k8s_client.CoreV1Api, namespace: str, image: str, count: int) -> list[float]:
    """Create ``count`` pods back to back; each one's seconds from its create call to Running."""
    created: dict[str, float] = {}
    for i in range(count):
        name = f"p{i:03d}"
        created[name] = time.monotonic()
        core.create_namespaced_pod(namespace, pod(name, image))
    running: dict[str, float] = {}
    deadline = time.monotonic() + 300
    while len(running) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(running)} of {count} pods Running after 300 s")
        now = time.monotonic()
        for item in core.list_namespaced_pod(namespace, label_selector="bench=node").items:
            if item.status.phase == "Running" and item.metadata.name not in running:
                running[item.metadata.name] = now - created[item.metadata.name]
            if item.status.phase in ("Failed", "Succeeded"):
                raise RuntimeError(f"pod {item.metadata.name} ended {item.status.phase}: {item.status}")
        time.sleep(0.05)
    return [running[name] for name in created]


def delete_round(core: k8s_client.CoreV1Api, namespace: str) -> float:
    began = time.monotonic()
    core.delete_collection_namespaced_pod(namespace, label_selector="bench=node", grace_period_seconds=1)
    wait_until(
        lambda: not core.list_namespaced_pod(namespace, label_selector="bench=node").items,
        timeout=120,
        what="the benchmark's pods to be gone",
    )
    return time.monotonic() - began


class PodTimes:
    """When this process's watch first saw each step pod's container running and terminated, and each Job."""

    def __init__(self, core: k8s_client.CoreV1Api, batch: k8s_client.BatchV1Api, namespace: str) -> None:
        self.core, self.batch, self.namespace = core, batch, namespace
        self.jobs: dict[str, float] = {}  # Job name -> first seen
        self.created: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.phase_ended: dict[str, float] = {}  # the pod's phase Succeeded or Failed
        self.pods: dict[str, Any] = {}
        self._watches = [k8s_watch.Watch(), k8s_watch.Watch()]
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._loop, args=(w, lister, seen), daemon=True)
            for w, lister, seen in zip(
                self._watches,
                (self.core.list_namespaced_pod, self.batch.list_namespaced_job),
                (self._seen, self._job_seen),
                strict=True,
            )
        ]

    def __enter__(self) -> PodTimes:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped = True
        for watch in self._watches:
            watch.stop()
        for thread in self._threads:
            thread.join(timeout=10)

    def _loop(self, watch: k8s_watch.Watch, lister: Any, seen: Any) -> None:
        # The API server may end a watch at any time ("Response ended prematurely" was seen after the first
        # Run): watch again. A re-list replays objects already seen, and setdefault keeps their first times.
        while not self._stopped:
            try:
                for event in watch.stream(lister, self.namespace, timeout_seconds=3600):
                    seen(event["object"])
            except (urllib3.exceptions.HTTPError, k8s_client.ApiException) as e:
                print(f"watch ended ({type(e).__name__}); watching again", file=sys.stderr)
                time.sleep(0.2)
            else:
                return  # stopped, or the hour is up

    def _job_seen(self, job: Any) -> None:
        self.jobs.setdefault(job.metadata.name, time.monotonic())

    def _seen(self, pod_: Any) -> None:
        now = time.monotonic()
        name = pod_.metadata.name
        self.pods[name] = pod_
        self.created.setdefault(name, now)
        for status in pod_.status.container_statuses or []:
            if status.state.running is not None or status.state.terminated is not None:
                self.started.setdefault(name, now)
            if status.state.terminated is not None:
                self.ended.setdefault(name, now)
        if pod_.status.phase in ("Succeeded", "Failed"):
            self.phase_ended.setdefault(name, now)


def chain_pipeline(name: str, image: str, chain: int) -> dict[str, Any]:
    steps = [
        {
            "name": f"s{i + 1}",
            "container": {"image": image, "command": ["python", "-c", f"print('step {i + 1}')"]},
            # Every Run repeats the same steps: without this the second Run would be all cache hits, with no pods.
            "cache": {"enabled": False},
            **({"dependsOn": [f"s{i}"]} if i else {}),
        }
        for i in range(chain)
    ]
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"steps": steps},
    }


def step_overhead(stack: ContainerStack, runs: int, chain: int) -> dict[str, Any]:
    """RUNS Runs of a CHAIN-step Pipeline on the real node, one after another, under the chart's operator."""
    out: dict[str, Any] = {"runs": runs, "chain": chain}
    began = time.monotonic()
    images = build_project_images()
    out["images_build_s"] = round(time.monotonic() - began, 1)
    began = time.monotonic()
    release = install(stack, images)
    out["import_and_helm_install_s"] = round(time.monotonic() - began, 1)
    ns = release.run_ns
    watched: list[float] = []
    to_phase: list[float] = []
    to_job: list[float] = []
    job_to_pod: list[float] = []
    to_pod: list[float] = []
    pod_to_running: list[float] = []
    stamped: list[float] = []
    walls: list[float] = []
    try:
        with release.api() as api:
            custom, core = k8s_client.CustomObjectsApi(api), k8s_client.CoreV1Api(api)
            custom.create_namespaced_custom_object(
                "conveyor.dev", "v1alpha1", ns, "pipelines", chain_pipeline("chain", images.step, chain)
            )
            with PodTimes(core, k8s_client.BatchV1Api(api), ns) as times:
                for number in range(runs):
                    name = f"chain-{number + 1}"
                    t0 = time.monotonic()
                    custom.create_namespaced_custom_object("conveyor.dev", "v1alpha1", ns, "runs", {
                        "apiVersion": "conveyor.dev/v1alpha1", "kind": "Run", "metadata": {"name": name},
                        "spec": {"pipelineRef": {"name": "chain"}},
                    })  # fmt: skip

                    def finished(run: str = name) -> dict[str, Any] | None:
                        obj: Any = custom.get_namespaced_custom_object("conveyor.dev", "v1alpha1", ns, "runs", run)
                        phase = (obj.get("status") or {}).get("phase")
                        return dict(obj) if phase in ("Succeeded", "Failed") else None

                    run_obj = wait_until(finished, timeout=600, what=f"run {name}", interval=0.25)
                    walls.append(time.monotonic() - t0)
                    if run_obj["status"]["phase"] != "Succeeded":
                        raise RuntimeError(f"run {name} failed: {json.dumps(run_obj['status'])[:2000]}")
                    time.sleep(1)  # the watch's last events
                    by_step = {
                        p.metadata.labels.get("conveyor.dev/step"): p
                        for p in times.pods.values()
                        if p.metadata.labels.get("conveyor.dev/run") == name
                    }
                    missing = [f"s{i}" for i in range(1, chain + 1) if f"s{i}" not in by_step]
                    if missing:
                        raise RuntimeError(
                            f"run {name}: no pod seen for steps {missing}; step states: "
                            f"{json.dumps(run_obj['status'].get('steps'))[:2000]}"
                        )
                    for i in range(1, chain):
                        up, down = by_step[f"s{i}"], by_step[f"s{i + 1}"]
                        a, b = up.metadata.name, down.metadata.name
                        if a in times.ended and b in times.started:
                            watched.append(times.started[b] - times.ended[a])
                            to_pod.append(times.created[b] - times.ended[a])
                            job = next(
                                iter(r.name for r in down.metadata.owner_references or [] if r.kind == "Job"), None
                            )
                            if a in times.phase_ended:
                                to_phase.append(times.phase_ended[a] - times.ended[a])
                            if job in times.jobs:
                                to_job.append(times.jobs[job] - times.ended[a])
                                job_to_pod.append(times.created[b] - times.jobs[job])
                            pod_to_running.append(times.started[b] - times.created[b])
                        finished_at = up.status.container_statuses[0].state.terminated.finished_at
                        state = down.status.container_statuses[0].state
                        started_at = (state.terminated or state.running).started_at
                        stamped.append((started_at - finished_at).total_seconds())
                    print(f"run {name}: {walls[-1]:.1f}s", file=sys.stderr)
    finally:
        release.uninstall()
    out["overhead_watch"] = summary(watched)
    out["overhead_split"] = {
        "ended_to_next_pod_seen": summary(to_pod),  # the operator's pass, the Job create, the Job controller
        "ended_to_its_phase_ended": summary(to_phase),  # the kubelet: container terminated → pod phase
        "ended_to_next_job_seen": summary(to_job),  # the operator: its watch, its pass, the Job create
        "next_job_seen_to_its_pod_seen": summary(job_to_pod),  # the Job controller
        "next_pod_seen_to_running": summary(pod_to_running),  # the scheduler, the kubelet, containerd, runc
    }
    out["overhead_pod_timestamps"] = summary(stamped)
    out["run_wall"] = summary(walls)
    return out


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=20, help="pods created at once per round (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--runs", type=int, default=4, help="Runs of the chain Pipeline, one after another (default 4)")
    parser.add_argument("--chain", type=int, default=5, help="steps per Run (default 5)")
    parser.add_argument("--no-runs", action="store_true", help="skip the step overhead phase (no images, no chart)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON document here")
    args = parser.parse_args()

    result: dict[str, Any] = {
        "benchmark": "node",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": pinned_versions(),
        "pods_per_round": args.pods,
    }
    began = time.monotonic()
    # The test environment reports its start-up on stdout; keep stdout for the JSON document.
    with contextlib.redirect_stdout(sys.stderr), container_stack() as stack:
        result["stack_startup_s"] = round(time.monotonic() - began, 2)
        result["control_plane_startup_s"] = round(stack.control_plane.startup_seconds or 0, 2)
        result["node_ready_s"] = round(stack.node.ready_seconds or 0, 2)
        time.sleep(5)  # let the kubelet's start-up work settle before measuring it idle
        result["runtime_pss_idle_mib"] = pss_mib(runtime_pids(stack))
        with stack.control_plane.api_client() as api:
            core = k8s_client.CoreV1Api(api)
            namespace = "node-bench"
            core.create_namespace({"metadata": {"name": namespace}})
            wait_until(
                lambda: core.list_namespaced_service_account(namespace, field_selector="metadata.name=default").items,
                timeout=30,
                what="the default ServiceAccount",
            )
            rounds = []
            every: list[float] = []
            for number in range(args.rounds):
                latencies = start_round(core, namespace, stack.node.test_image, args.pods)
                pss = pss_mib(runtime_pids(stack))
                deleted = delete_round(core, namespace)
                every += latencies
                row = {"round": number + 1, **summary(latencies), "runtime_pss_mib": pss, "delete_s": round(deleted, 2)}
                rounds.append(row)
                print(f"round {number + 1}: {summary(latencies)}", file=sys.stderr)
            result["rounds"] = rounds
            result["pod_start"] = summary(every)
        if not args.no_runs:
            result["step_overhead"] = step_overhead(stack, args.runs, args.chain)
    result["wall_s"] = round(time.monotonic() - began, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
