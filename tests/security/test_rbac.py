"""The operator without permission to create Jobs: the Run must say what failed, and the operator keep running.

The chart's own RBAC (exactly what the code uses, and the operator running under it) is tested in
tests/integration/test_chart.py. Here the operator runs, as in that test, with a ServiceAccount token
instead of the admin kubeconfig, but bound to a ClusterRole that grants everything it needs except
`create` on batch/jobs. This module starts no other operator, so nothing else acts on the Run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from e2e import test_operator
from e2e.test_operator import GROUP, VERSION, Operator, create, get_run
from integration.test_chart import token_kubeconfig
from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.nodeagent import NodeAgentProcess

pytestmark = pytest.mark.e2e

ns = test_operator.ns  # the namespace with the artifact Secret (this module starts no `operator`)

EVERYTHING = [
    "",
    "conveyor.dev",
    "kopf.dev",
    "events.k8s.io",
    "apiextensions.k8s.io",
    "coordination.k8s.io",
    "apps",
    "policy",
    "autoscaling",
    "monitoring.coreos.com",
]
JOB_VERBS_BUT_CREATE = ["get", "list", "watch", "update", "patch", "delete", "deletecollection"]


@pytest.fixture
def no_job_create_operator(
    control_plane: ControlPlane,
    ns: str,
    minio: S3Endpoint,
    node_agent: NodeAgentProcess,
    install_crds: list[str],
    api: k8s_client.ApiClient,
    tmp_path: Path,
) -> Iterator[Operator]:
    rbac = k8s_client.RbacAuthorizationV1Api(api)
    core = k8s_client.CoreV1Api(api)
    name = f"conveyor-no-job-create-{ns}"
    core.create_namespaced_service_account(ns, {"metadata": {"name": "limited"}})
    rbac.create_cluster_role(
        {
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": EVERYTHING, "resources": ["*"], "verbs": ["*"]},
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": JOB_VERBS_BUT_CREATE},
                {"apiGroups": ["batch"], "resources": ["jobs/status", "cronjobs"], "verbs": ["*"]},
            ],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": ns}],
        }
    )
    token = control_plane.kubectl("create", "token", "limited", "-n", ns, "--duration=1h").stdout.strip()
    kubeconfig = token_kubeconfig(control_plane, tmp_path / "limited.kubeconfig", token)
    denied = control_plane.kubectl(
        "auth", "can-i", "create", "jobs", "-n", ns, f"--as=system:serviceaccount:{ns}:limited", check=False
    )
    assert denied.stdout.strip() == "no", denied.stdout
    op = Operator(
        control_plane,
        minio,
        control_plane.log_dir,
        name=f"operator-no-job-create-{ns}",
        extra_env={"KUBECONFIG": str(kubeconfig), "CONVEYOR_NAMESPACES": json.dumps([ns])},
    ).start()
    try:
        yield op
    finally:
        op.stop()
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)


def _what_the_user_sees(api: k8s_client.ApiClient, ns: str) -> tuple[list[dict[str, Any]], list[str]]:
    run = get_run(api, ns, "denied")
    events = k8s_client.CoreV1Api(api).list_namespaced_event(ns, field_selector="involvedObject.name=denied").items
    return run.get("status", {}).get("conditions", []), [f"{e.reason}: {e.message}" for e in events]


def _names_the_denial(text: str) -> bool:
    lowered = text.lower()
    return ("forbidden" in lowered or "permission" in lowered or "not allowed" in lowered) and "job" in lowered


def test_a_forbidden_job_create_is_reported_on_the_run_and_the_operator_keeps_running(
    api: k8s_client.ApiClient, ns: str, no_job_create_operator: Operator
) -> None:
    op = no_job_create_operator
    create(
        api,
        ns,
        "runs",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Run",
            "metadata": {"name": "denied"},
            "spec": {
                "pipelineSpec": {
                    "steps": [
                        {
                            "name": "hello",
                            "container": {"image": "local", "command": [sys.executable, "-c", "print('hi')"]},
                        },
                    ]
                }
            },
        },
    )

    def reported() -> bool:
        conditions, events = _what_the_user_sees(api, ns)
        return any(_names_the_denial(c.get("message", "") + c.get("reason", "")) for c in conditions) or any(
            _names_the_denial(e) for e in events
        )

    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and not reported():
        time.sleep(1)
    _, events = _what_the_user_sees(api, ns)
    assert op.process is not None and op.process.exit_code() is None, "the operator exited"
    denials = [line for line in op.log().splitlines() if "403" in line or "orbidden" in line]
    assert denials, "the operator never tried to create the Job"
    handler_failures = [line for line in denials if "Handler" in line]
    assert reported(), (
        f"no condition or event names the denial; status={get_run(api, ns, 'denied').get('status')} "
        f"events={events}; the operator logged {len(handler_failures)} handler failures in 45 s, the first: "
        f"{handler_failures[:1]}; Forbidden detail: {[d for d in denials if 'Forbidden' in d][:1]}"
    )
