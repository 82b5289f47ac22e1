"""The real node: kubelet + containerd + CNI run pods as containers, as a cluster would.

Every pod runs the node-test image (a static test program whose steps, separated by ";", are
listed in hack/install-testenv.sh), imported into the node's containerd without a registry.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client

from testenv.binaries import pinned_versions
from testenv.containerstack import ContainerStack
from testenv.processes import wait_until

pytestmark = pytest.mark.containers

Json = dict[str, Any]
SA_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


def steps(*commands: str) -> list[str]:
    """nodetest arguments for several steps: ``steps("print hi", "exit 3")``."""
    args: list[str] = []
    for command in commands:
        args += [*([";"] if args else []), *command.split(" ")]
    return args


def container(stack: ContainerStack, args: list[str], name: str = "main", **extra: Any) -> Json:
    return {
        "name": name,
        "image": stack.node.test_image,
        "imagePullPolicy": "Never",
        "command": ["/nodetest"],
        "args": args,
        **extra,
    }


def pod_manifest(name: str, *containers: Json, **spec: Any) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2, "containers": list(containers), **spec},
    }


class Pods:
    """Pods in one fresh namespace of the container stack, and waits on them."""

    def __init__(self, stack: ContainerStack, namespace: str, core: k8s_client.CoreV1Api) -> None:
        self.stack, self.namespace, self.core = stack, namespace, core

    def create(self, manifest: Json) -> str:
        self.core.create_namespaced_pod(self.namespace, manifest)
        return str(manifest["metadata"]["name"])

    def read(self, name: str) -> Any:
        return self.core.read_namespaced_pod_status(name, self.namespace)

    def wait_phase(self, name: str, *phases: str, timeout: float = 60) -> Any:
        """Wait until the pod is in one of ``phases``; fail at once if it settles in another."""

        def settled() -> Any:
            pod = self.read(name)
            if pod.status.phase in phases:
                return pod
            if pod.status.phase in ("Succeeded", "Failed"):
                raise AssertionError(f"pod {name} ended {pod.status.phase}, expected {phases}: {pod.status}")
            return None

        return wait_until(settled, timeout=timeout, what=f"pod {self.namespace}/{name} {'/'.join(phases)}")

    def terminated(self, name: str, timeout: float = 60) -> Any:
        """The first container's terminated state once the pod has ended."""
        pod = self.wait_phase(name, "Succeeded", "Failed", timeout=timeout)
        return pod.status.container_statuses[0].state.terminated

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.stack.control_plane.kubectl("-n", self.namespace, *args, check=check)


@pytest.fixture
def pods(request: pytest.FixtureRequest, container_stack: ContainerStack) -> Iterator[Pods]:
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"n-{base}-{secrets.token_hex(3)}"
    with container_stack.control_plane.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name}})
        wait_until(
            lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
            timeout=30,
            what=f"the default ServiceAccount in {name}",
        )
        try:
            yield Pods(container_stack, name, core)
        finally:
            core.delete_namespace(name)


def test_node_is_ready_with_the_bridge_gateway_as_its_address(container_stack: ContainerStack) -> None:
    node = container_stack.node
    with container_stack.control_plane.api_client() as api:
        status = k8s_client.CoreV1Api(api).read_node_status(node.node_name).status
    assert {c.type: c.status for c in status.conditions}["Ready"] == "True"
    assert [a.address for a in status.addresses if a.type == "InternalIP"] == [container_stack.gateway]
    assert status.node_info.kubelet_version == pinned_versions()["K8S_VERSION"]
    assert status.node_info.container_runtime_version.startswith("containerd://")
    assert status.daemon_endpoints.kubelet_endpoint.port == node.kubelet_port
    assert node.ready_seconds is not None
    print(f"\n[node] Ready {node.ready_seconds:.1f}s after start; images: {node.images()}")


def test_pod_runs_with_an_address_of_the_node_subnet(pods: Pods) -> None:
    name = pods.create(pod_manifest("sleeper", container(pods.stack, steps("sleep forever"))))
    pod = pods.wait_phase(name, "Running")
    subnet = ipaddress.ip_network(pods.stack.network.cidr)
    assert ipaddress.ip_address(pod.status.pod_ip) in subnet
    assert pod.status.pod_ip != pods.stack.gateway
    assert pod.status.host_ip == pods.stack.gateway
    assert pod.status.container_statuses[0].ready


def test_a_jobs_pod_completes(pods: Pods) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "ok"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [container(pods.stack, steps("print done"))]}
            },
        },
    }
    with pods.stack.control_plane.api_client() as api:
        batch = k8s_client.BatchV1Api(api)
        batch.create_namespaced_job(pods.namespace, job)

        def complete() -> bool:
            conditions = batch.read_namespaced_job_status("ok", pods.namespace).status.conditions or []
            kinds = {c.type for c in conditions if c.status == "True"}
            assert "Failed" not in kinds, conditions
            return "Complete" in kinds

        wait_until(complete, timeout=60, what="Job ok Complete")
    (pod,) = pods.core.list_namespaced_pod(pods.namespace, label_selector="job-name=ok").items
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.reason, terminated.exit_code) == ("Succeeded", "Completed", 0)


def test_a_failing_container_is_reported_as_error_with_its_exit_code(pods: Pods) -> None:
    name = pods.create(pod_manifest("fails", container(pods.stack, steps("eprint no rows", "exit 3"))))
    terminated = pods.terminated(name)
    assert (terminated.reason, terminated.exit_code) == ("Error", 3)
    assert pods.read(name).status.phase == "Failed"


def test_termination_messages_from_the_file_and_from_the_log(pods: Pods) -> None:
    from_file = pods.create(
        pod_manifest("message", container(pods.stack, steps("write /dev/termination-log trained 3 models")))
    )
    fallback = pods.create(
        pod_manifest(
            "fallback",
            container(
                pods.stack, steps("print reading input", "eprint bad input: no rows", "exit 2"),
                terminationMessagePolicy="FallbackToLogsOnError",
            ),
        )
    )  # fmt: skip
    assert pods.terminated(from_file).message == "trained 3 models"
    terminated = pods.terminated(fallback)
    assert terminated.exit_code == 2
    assert "bad input: no rows" in terminated.message


def test_kubectl_logs_and_exec_go_through_the_api_server_to_the_kubelet(pods: Pods) -> None:
    name = pods.create(
        pod_manifest("talker", container(pods.stack, steps("print hello from the pod", "sleep forever")))
    )
    pods.wait_phase(name, "Running")
    wait_until(lambda: "hello from the pod" in pods.kubectl("logs", name).stdout, timeout=20, what="the pod's log")
    assert pods.kubectl("exec", name, "--", "/nodetest", "print", "from", "exec").stdout == "from exec\n"
    failed = pods.kubectl("exec", name, "--", "/nodetest", "exit", "5", check=False)
    assert failed.returncode == 5, failed.stderr


def test_a_container_over_its_memory_limit_is_oomkilled(pods: Pods) -> None:
    limits = {"resources": {"limits": {"memory": "32Mi"}, "requests": {"memory": "32Mi"}}}
    name = pods.create(pod_manifest("hog", container(pods.stack, steps("alloc 256", "sleep 30"), **limits)))
    terminated = pods.terminated(name)
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)


def test_non_root_with_a_read_only_root_and_an_empty_dir_on_tmp(pods: Pods) -> None:
    restricted = {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    main = container(
        # `cat` prints the file without a newline; the empty `print` ends the line.
        pods.stack, steps("id", "write /tmp/scratch ok", "cat /tmp/scratch", "print", "sleep forever"),
        securityContext=restricted, volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}],
    )  # fmt: skip
    name = pods.create(pod_manifest("restricted", main, volumes=[{"name": "tmp", "emptyDir": {}}]))
    pods.wait_phase(name, "Running")
    wait_until(lambda: pods.kubectl("logs", name).stdout == "uid=65532 gid=65532\nok\n", timeout=20, what="its log")
    refused = pods.kubectl("exec", name, "--", "/nodetest", "write", "/written", "x", check=False)
    assert refused.returncode == 1
    assert "read-only file system" in refused.stderr


def test_a_pod_reaches_minio_and_the_api_server_on_the_gateway(pods: Pods) -> None:
    minio = pods.stack.minio.endpoint.endpoint
    api = f"https://{pods.stack.api_host}:{pods.stack.api_port}/version"
    name = pods.create(
        pod_manifest("client", container(pods.stack, steps(f"get {minio}/minio/health/live", f"get {api} {SA_CA}")))
    )
    assert pods.terminated(name).exit_code == 0, pods.kubectl("logs", name, check=False).stdout
    log = pods.kubectl("logs", name).stdout
    assert log.count("status 200") == 2, log
    assert pinned_versions()["K8S_VERSION"] in log


def test_a_pod_reaches_another_pod_by_its_address(pods: Pods) -> None:
    # Bridged pod-to-pod frames pass the host's FORWARD chain when bridge netfilter is loaded.
    server = pods.create(pod_manifest("server", container(pods.stack, steps("serve 8080 hello from the server"))))
    address = pods.wait_phase(server, "Running").status.pod_ip
    client = pods.create(pod_manifest("client", container(pods.stack, steps(f"get http://{address}:8080/"))))
    assert pods.terminated(client).exit_code == 0, pods.kubectl("logs", client, check=False).stdout
    assert pods.kubectl("logs", client).stdout == "status 200\nhello from the server\n\n"


def test_pod_traffic_to_anything_but_the_node_subnet_goes_nowhere(pods: Pods) -> None:
    # A ClusterIP (no kube-proxy), the machine's own gateway, the internet: no route in the pod.
    targets = ("http://10.96.0.1:443/", "http://192.0.2.1/", "http://1.1.1.1/")
    names = [
        pods.create(pod_manifest(f"out-{i}", container(pods.stack, steps(f"get {url}"))))
        for i, url in enumerate(targets)
    ]
    for name in names:
        assert pods.terminated(name).exit_code == 1
        assert "network is unreachable" in pods.kubectl("logs", name).stdout
