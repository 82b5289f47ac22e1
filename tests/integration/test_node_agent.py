"""The test node agent behaves like a kubelet where our tests depend on it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from integration.kube import job_manifest, pods_of, python_container, wait_job
from testenv.minio import S3Endpoint
from testenv.nodeagent import NodeAgentProcess
from testenv.processes import wait_until

pytestmark = pytest.mark.integration


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pod(name: str, container: dict[str, Any], grace: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": grace, "containers": [container]},
    }


@pytest.mark.parametrize(
    ("handles_sigterm", "grace"),
    [(True, 30), (False, 1)],
    ids=["graceful", "killed-after-grace"],
)
def test_deleting_a_pod_kills_its_process(
    api: k8s_client.ApiClient,
    namespace: str,
    node_agent: NodeAgentProcess,
    tmp_path: Path,
    handles_sigterm: bool,
    grace: int,
) -> None:
    pid_file = tmp_path / "pid"
    term_file = tmp_path / "term"
    code = (
        "import os, signal, sys, time\n"
        f"if {handles_sigterm}:\n"
        f"    signal.signal(signal.SIGTERM, lambda *_: (open({str(term_file)!r}, 'w'), sys.exit(0)))\n"
        "else:\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pid_file)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
        f"os.rename({str(pid_file)!r} + '.tmp', {str(pid_file)!r})\n"
        "time.sleep(600)\n"
    )
    core = k8s_client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, _pod("sleeper", python_container("main", code), grace))
    wait_until(pid_file.exists, timeout=30, what="the pod's process to write its pid")
    pid = int(pid_file.read_text())
    assert _pid_alive(pid)

    core.delete_namespaced_pod("sleeper", namespace)

    def pod_gone() -> bool:
        try:
            core.read_namespaced_pod("sleeper", namespace)
        except k8s_client.ApiException as exc:
            return exc.status == 404
        return False

    wait_until(pod_gone, timeout=30, what="the pod object to be deleted")
    assert not _pid_alive(pid)
    assert term_file.exists() == handles_sigterm


def test_env_from_secret_configmap_and_fields_reaches_process(
    api: k8s_client.ApiClient, namespace: str, node_agent: NodeAgentProcess
) -> None:
    core = k8s_client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"MODE": "fast"}})
    code = (
        "import json, os; keys = ['TOKEN', 'CFG_MODE', 'POD', 'GREETING'];"
        "seen = {k: os.environ.get(k) for k in keys};"
        "open(os.environ['CONVEYOR_TERMINATION_LOG'], 'w').write(json.dumps(seen))"
    )
    container = python_container(
        "main",
        code,
        env=[
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GREETING", "value": "hello $(POD)"},
        ],
        envFrom=[{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
    )
    batch = k8s_client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, job_manifest("env", container))
    wait_job(batch, namespace, "env", "Complete")
    (pod,) = pods_of(core, namespace, "job-name=env")
    seen = json.loads(pod.status.container_statuses[0].state.terminated.message)
    assert seen == {
        "TOKEN": "s3cr3t",
        "CFG_MODE": "fast",
        "POD": pod.metadata.name,
        "GREETING": f"hello {pod.metadata.name}",
    }


def test_pod_in_its_own_network_namespace_reaches_minio(
    api: k8s_client.ApiClient, namespace: str, minio: S3Endpoint, node_agent: NodeAgentProcess
) -> None:
    s3 = minio.client()
    try:
        s3.put_object(Bucket=minio.bucket, Key=f"{namespace}/greeting", Body=b"hi from the test")
    finally:
        s3.close()
    code = (
        "import os, boto3\n"
        "s3 = boto3.client('s3', endpoint_url=os.environ['S3'], aws_access_key_id=os.environ['AK'],"
        " aws_secret_access_key=os.environ['SK'], region_name='us-east-1')\n"
        f"obj = s3.get_object(Bucket={minio.bucket!r}, Key={namespace + '/greeting'!r})\n"
        "body = obj['Body'].read().decode()\n"
        "open(os.environ['CONVEYOR_TERMINATION_LOG'], 'w').write(body)\n"
    )
    container = python_container(
        "main",
        code,
        # A declared port puts the pod in a network namespace of its own.
        ports=[{"containerPort": 9000}],
        env=[
            {"name": "S3", "value": minio.endpoint},
            {"name": "AK", "value": minio.access_key},
            {"name": "SK", "value": minio.secret_key},
        ],
    )
    batch = k8s_client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, job_manifest("fetch", container))
    wait_job(batch, namespace, "fetch", "Complete", timeout=60)
    (pod,) = pods_of(k8s_client.CoreV1Api(api), namespace, "job-name=fetch")
    assert pod.status.container_statuses[0].state.terminated.message == "hi from the test"
    assert pod.status.pod_ip != pod.status.host_ip  # it really had an address of its own


def test_failing_liveness_probe_restarts_the_container(
    api: k8s_client.ApiClient, namespace: str, node_agent: NodeAgentProcess
) -> None:
    container = python_container(
        "main",
        "import time; time.sleep(600)",
        livenessProbe={"exec": {"command": [sys.executable, "-c", "raise SystemExit(1)"]}, "periodSeconds": 1,
                       "failureThreshold": 1},
    )  # fmt: skip
    core = k8s_client.CoreV1Api(api)
    core.create_namespaced_pod(
        namespace,
        {"metadata": {"name": "unhealthy"},
         "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 1, "containers": [container]}},
    )  # fmt: skip

    def restarted() -> bool:
        statuses = core.read_namespaced_pod_status("unhealthy", namespace).status.container_statuses or []
        return bool(statuses) and statuses[0].restart_count >= 1

    wait_until(restarted, timeout=30, what="a liveness restart")


def test_volume_mount_paths_are_rewritten_to_pod_directories(
    api: k8s_client.ApiClient, namespace: str, node_agent: NodeAgentProcess
) -> None:
    core = k8s_client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "app"}, "data": {"greeting": "hello"}})
    code = (
        "import os, sys; cfg, scratch = sys.argv[1], os.environ['SCRATCH'];"
        "text = open(cfg + '/greeting').read();"
        "open(scratch + '/out', 'w').write(text.upper());"
        "open('/dev/termination-log', 'w').write(open(scratch + '/out').read() + ' ' + os.getcwd())"
    )
    container = python_container(
        "main",
        code,
        args=["/etc/app"],
        env=[{"name": "SCRATCH", "value": "/scratch"}],
        workingDir="/scratch",
        volumeMounts=[{"name": "cfg", "mountPath": "/etc/app"}, {"name": "tmp", "mountPath": "/scratch"}],
    )
    job = job_manifest("vols", container)
    job["spec"]["template"]["spec"]["volumes"] = [
        {"name": "cfg", "configMap": {"name": "app"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    batch = k8s_client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, job)
    wait_job(batch, namespace, "vols", "Complete")
    (pod,) = pods_of(core, namespace, "job-name=vols")
    message = pod.status.container_statuses[0].state.terminated.message
    text, cwd = message.split(" ", 1)
    assert text == "HELLO"
    assert cwd.endswith("/volumes/tmp")  # workingDir /scratch is the emptyDir's local directory


def test_init_container_runs_first_and_shares_volumes(
    api: k8s_client.ApiClient, namespace: str, node_agent: NodeAgentProcess
) -> None:
    mount = [{"name": "shared", "mountPath": "/shared"}]
    init = python_container("prepare", "open('/shared/ready', 'w').write('prepared')", volumeMounts=mount)
    main = python_container(
        "main", "open('/dev/termination-log', 'w').write(open('/shared/ready').read())", volumeMounts=mount
    )
    job = job_manifest("init", main)
    job["spec"]["template"]["spec"]["initContainers"] = [init]
    job["spec"]["template"]["spec"]["volumes"] = [{"name": "shared", "emptyDir": {}}]
    batch = k8s_client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, job)
    wait_job(batch, namespace, "init", "Complete")
    (pod,) = pods_of(k8s_client.CoreV1Api(api), namespace, "job-name=init")
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0
    assert pod.status.container_statuses[0].state.terminated.message == "prepared"
