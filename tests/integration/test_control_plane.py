"""The real control plane runs Jobs and Deployments through the test node agent."""

from __future__ import annotations

import ipaddress
import subprocess
import urllib.request
from typing import Any

import pytest
from kubernetes import client as k8s_client

from integration.kube import job_manifest, pod_ready, pods_of, python_container, wait_job
from testenv.binaries import pinned_versions
from testenv.controlplane import ControlPlane
from testenv.nodeagent import NodeAgentProcess
from testenv.processes import wait_until

pytestmark = pytest.mark.integration


def test_server_reports_the_pinned_version(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{pinned_versions()["K8S_VERSION"]}"' in out


def test_job_completes_and_reports_termination_message(
    api: k8s_client.ApiClient, namespace: str, node_agent: NodeAgentProcess
) -> None:
    # The script writes the kubelet's default path; the agent rewrites it to a per-container file.
    code = "open('/dev/termination-log', 'w').write('trained 3 models'); print('bye')"
    batch = k8s_client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, job_manifest("ok", python_container("main", code)))

    job = wait_job(batch, namespace, "ok", "Complete")
    assert job.status.succeeded == 1
    (pod,) = pods_of(k8s_client.CoreV1Api(api), namespace, "job-name=ok")
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert terminated.reason == "Completed"
    assert terminated.message == "trained 3 models"
    assert node_agent.container_log(namespace, pod.metadata.name, "main").strip().endswith("bye")


def test_failing_job_records_exit_code_and_is_retried(
    api: k8s_client.ApiClient, namespace: str, node_agent: NodeAgentProcess
) -> None:
    code = "import sys; print('bad input: no rows', file=sys.stderr); sys.exit(3)"
    container = python_container("main", code, terminationMessagePolicy="FallbackToLogsOnError")
    batch = k8s_client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, job_manifest("bad", container, backoff_limit=1))

    job = wait_job(batch, namespace, "bad", "Failed", timeout=120)
    assert job.status.failed == 2  # the first try plus backoffLimit=1 retry
    reasons = {c.reason for c in job.status.conditions if c.type == "Failed"}
    assert reasons == {"BackoffLimitExceeded"}
    pods = pods_of(k8s_client.CoreV1Api(api), namespace, "job-name=bad")
    assert len(pods) == 2
    for pod in pods:
        terminated = pod.status.container_statuses[0].state.terminated
        assert terminated.exit_code == 3
        assert terminated.reason == "Error"
        assert "bad input: no rows" in terminated.message  # FallbackToLogsOnError


def _web_deployment(name: str, replicas: int, delay: float) -> dict[str, Any]:
    """http.server that starts listening only after ``delay`` seconds, behind an httpGet readinessProbe."""
    code = (
        f"import time, http.server; time.sleep({delay}); "
        "handler = http.server.SimpleHTTPRequestHandler; "
        "http.server.ThreadingHTTPServer(('0.0.0.0', 8080), handler).serve_forever()"
    )
    container = python_container(
        "web",
        code,
        ports=[{"name": "http", "containerPort": 8080}],
        readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 5},
            },
        },
    }


def test_deployment_becomes_ready_through_probe_and_is_reachable(
    api: k8s_client.ApiClient, namespace: str, node_agent: NodeAgentProcess
) -> None:
    core = k8s_client.CoreV1Api(api)
    k8s_client.AppsV1Api(api).create_namespaced_deployment(namespace, _web_deployment("web", 2, delay=3))
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )

    seen_running_unready = False

    def both_ready() -> list[Any] | None:
        nonlocal seen_running_unready
        pods = pods_of(core, namespace, "app=web")
        for pod in pods:
            if pod.status.phase == "Running" and not pod_ready(pod):
                seen_running_unready = True
        ready = [p for p in pods if pod_ready(p)]
        return ready if len(ready) == 2 else None

    pods: Any = wait_until(both_ready, timeout=60, what="2 ready web pods")
    # The process was running before it listened: Ready came from the probe, not from the start.
    assert seen_running_unready

    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2
    for ip in ips:
        assert not ipaddress.ip_address(ip).is_loopback

    discovery = k8s_client.DiscoveryV1Api(api)

    def slice_addresses() -> set[str] | None:
        slices = discovery.list_namespaced_endpoint_slice(namespace, label_selector="kubernetes.io/service-name=web")
        found = {
            addr
            for s in slices.items
            for ep in s.endpoints or []
            if ep.conditions and ep.conditions.ready
            for addr in ep.addresses
        }
        return found if found == ips else None

    wait_until(slice_addresses, timeout=30, what="EndpointSlice listing both pod IPs")

    for ip in ips:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as resp:
            assert resp.status == 200

    # Scaling to zero deletes the pods: their processes stop and their network namespaces go away.
    uids = {p.metadata.uid.replace("-", "")[:8] for p in pods}
    k8s_client.AppsV1Api(api).patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    wait_until(lambda: not pods_of(core, namespace, "app=web"), timeout=30, what="web pods deleted")

    def namespaces_removed() -> bool:
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        return not any(uid in listing for uid in uids)

    wait_until(namespaces_removed, timeout=15, what="the pods' network namespaces to be removed")
