"""The web console over the test cluster: `conveyor ui --kubeconfig` as a real process, a real Chromium.

The control plane, MinIO and the node agent are the e2e fixtures (testenv.stack shares them with
tests/e2e and tests/integration in one pytest session); the operator runs as its own process, as in
tests/e2e/test_operator.py. A Run's steps are real pods: the list shows the Run, its page its DAG with
the right step states and a running step's log from its pod, and once the Run has ended and its pods
are deleted, a finished step's log is read from the archive the step runtime wrote.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from playwright.sync_api import expect

from console.harness import Console, Watched, serving_with
from e2e import test_operator
from e2e.test_operator import Operator, create, get_run, run_body, wait_done
from integration.conftest import control_plane, install_crds, minio, minio_server, node_agent, pod_bridge
from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.processes import wait_until

pytestmark = pytest.mark.e2e

__all__ = ["control_plane", "install_crds", "minio", "minio_server", "node_agent", "pod_bridge"]

RUN = "console-run"

operator = test_operator.operator  # the operator process, as tests/e2e/test_operator.py starts it


@pytest.fixture(scope="module")
def ns(control_plane: ControlPlane, minio: S3Endpoint) -> Iterator[str]:
    """One namespace for the module (the console is started on it), with the artifact Secret step pods read."""
    name = f"t-console-{secrets.token_hex(3)}"
    with control_plane.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name, "labels": {"conveyor.dev/test": "true"}}})
        wait_until(
            lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items),
            timeout=30,
            what=f"default ServiceAccount in {name}",
        )
        core.create_namespaced_secret(
            name,
            k8s_client.V1Secret(
                metadata=k8s_client.V1ObjectMeta(name="conveyor-artifacts"),
                string_data={"accessKey": minio.access_key, "secretKey": minio.secret_key},
            ),
        )
        try:
            yield name
        finally:
            core.delete_namespace(name)


@pytest.fixture(scope="module")
def console(
    control_plane: ControlPlane,
    minio: S3Endpoint,
    operator: Operator,
    ns: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Console]:
    """`conveyor ui --kubeconfig ... -n NS` (this module's `console`, in place of the local one)."""
    work = tmp_path_factory.mktemp("console-cluster")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        "AWS_DEFAULT_REGION": minio.region,
    }
    env.pop("KUBECONFIG", None)  # only what --kubeconfig says
    args = ["--kubeconfig", str(control_plane.kubeconfig), "-n", ns]
    with serving_with(work, [*args, "--s3-endpoint", minio.endpoint, "--bucket", minio.bucket], env) as running:
        yield running


@pytest.fixture
def gate() -> Iterator[Path]:
    # Not under /tmp: step pods mount an emptyDir there, and the node agent maps it to a pod directory.
    where = Path(tempfile.mkdtemp(prefix="conveyor-console-", dir="/var/tmp"))
    yield where / "gate"
    (where / "gate").touch()
    shutil.rmtree(where, ignore_errors=True)


def py_step(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "local", "command": [sys.executable, "-c", code]}, **extra}


def pipeline(gate: Path) -> dict[str, Any]:
    first = py_step(
        "first",
        "import sys; print('archived line from first', flush=True); open(sys.argv[1], 'w').write('x' * 42)",
        outputs=[{"name": "data"}],
    )
    first["container"]["args"] = ["{{ outputs.data }}"]
    wait = py_step(
        "wait",
        "import pathlib, time\n"
        "print('live line from wait', flush=True)\n"
        f"gate, t0 = pathlib.Path({str(gate)!r}), time.monotonic()\n"
        "while not gate.exists() and time.monotonic() - t0 < 180:\n"
        "    time.sleep(0.1)\n"
        "print('wait is over', flush=True)\n",
        dependsOn=["first"],
    )
    wait["cache"] = {"enabled": False}
    after = py_step("after", "print('after it all')", inputs=[{"name": "data", "step": "first", "output": "data"}])
    after["dependsOn"] = ["wait"]
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "console-slow"},
        "spec": {"steps": [first, wait, after]},
    }


def pods_of(api: k8s_client.ApiClient, ns: str, run: str) -> list[Any]:
    return list(k8s_client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"conveyor.dev/run={run}").items)


def api_get(console: Console, path: str) -> Any:
    with urllib.request.urlopen(console.url + path.lstrip("/"), timeout=30) as resp:
        return json.loads(resp.read())


def test_runs_list_dag_live_log_and_archived_log_after_the_pods_are_gone(
    page: Watched,
    console: Console,
    control_plane: ControlPlane,
    minio: S3Endpoint,
    operator: Operator,
    ns: str,
    gate: Path,
) -> None:
    run_id = f"{ns}/{RUN}"
    with control_plane.api_client() as api:
        create(api, ns, "pipelines", pipeline(gate))
        create(api, ns, "runs", run_body(RUN, "console-slow"))

        pg = page.page
        pg.goto("/")
        row = pg.locator(f'#runs tr.run[data-run="{run_id}"]')
        expect(row).to_have_count(1, timeout=30_000)  # the open list picks the new Run up
        expect(row.locator("td.pipeline")).to_have_text("console-slow")
        expect(pg.locator("#filter-namespace")).to_be_visible()  # a cluster's runs can be filtered by namespace
        pg.select_option("#filter-namespace", ns)
        expect(row).to_have_count(1)
        assert f"namespace={ns}" in pg.url

        row.locator("td.run-id a").click()
        assert pg.url.endswith("/runs/" + urllib.parse.quote(run_id, safe=""))
        dag = pg.locator(".dag svg")
        expect(dag.locator('g.node[data-id="wait"]')).to_have_attribute("data-state", "Running", timeout=90_000)
        expect(dag.locator('g.node[data-id="first"]')).to_have_attribute("data-state", "Succeeded")
        expect(dag.locator('g.node[data-id="after"]')).to_have_attribute("data-state", "Pending")
        assert dag.locator("path.edge").count() == 3  # first→wait, wait→after (dependsOn), first→after (input)
        expect(pg.locator("h1 .phase")).to_have_text("Running")
        expect(pg.locator("table.conditions")).to_contain_text("Succeeded")  # the Run's conditions, from its status

        # A running step's log is its pod's until the runtime archives it as the attempt ends. The test
        # node agent serves no kubelet API (the API server cannot read its pods' logs), so here it says
        # it has none yet, and the open log follows the step to its archived log.
        wait = pg.locator('details.step[data-step="wait"]')
        wait.locator("summary").first.click()
        wait.locator("details.log summary").click()
        expect(wait.locator("pre.log-text")).to_contain_text("no archived log yet")
        first = pg.locator('details.step[data-step="first"]')
        first.locator("summary").first.click()
        first.locator("details.log summary").click()
        expect(first.locator("pre.log-text")).to_contain_text("archived line from first")  # ended: archived

        gate.touch()
        expect(pg.locator("h1 .phase")).to_have_text("Succeeded", timeout=120_000)
        expect(wait.locator("pre.log-text")).to_contain_text("live line from wait", timeout=20_000)
        run = wait_done(api, ns, RUN, operator)
        assert run["status"]["phase"] == "Succeeded", run["status"]
        wait_until(lambda: get_run(api, ns, RUN)["status"].get("recordUri"), timeout=60, what="the record")

        # the pods go away; the console reads the finished steps' logs from the archive
        control_plane.kubectl("delete", "pods", "-n", ns, "-l", f"conveyor.dev/run={RUN}", "--wait=true", timeout=120)
        wait_until(lambda: pods_of(api, ns, RUN) == [], timeout=60, what="the pods to be deleted")

    pg.reload()
    for name in ("first", "wait", "after"):
        expect(dag.locator(f'g.node[data-id="{name}"]')).to_have_attribute("data-state", "Succeeded", timeout=20_000)
    first = pg.locator('details.step[data-step="first"]')
    first.locator("summary").first.click()
    record = api_get(console, "/api/runs/" + urllib.parse.quote(run_id, safe=""))
    made = next(s for s in record["steps"] if s["name"] == "first")["outputs"][0]
    assert made["digest"].startswith("sha256:") and made["size"] == 42
    expect(first.locator("table.outputs")).to_contain_text(made["digest"])
    first.locator("details.log summary").click()
    expect(first.locator("pre.log-text")).to_contain_text("archived line from first")
    wait = pg.locator('details.step[data-step="wait"]')
    wait.locator("summary").first.click()
    wait.locator("details.log summary").click()
    expect(wait.locator("pre.log-text")).to_contain_text("wait is over")
    assert all(minio.secret_key.encode() not in body for _, body in page.bodies)


def test_a_failed_run_says_why_and_the_list_filters_by_namespace_and_phase(
    console: Console, control_plane: ControlPlane, operator: Operator, ns: str
) -> None:
    with control_plane.api_client() as api:
        create(
            api,
            ns,
            "pipelines",
            {
                "apiVersion": "conveyor.dev/v1alpha1",
                "kind": "Pipeline",
                "metadata": {"name": "console-broken"},
                "spec": {"steps": [py_step("explode", "import sys; print('about to fail'); sys.exit(3)")]},
            },
        )
        create(api, ns, "runs", run_body("console-failed", "console-broken"))
        run = wait_done(api, ns, "console-failed", operator)
        assert run["status"]["phase"] == "Failed", run["status"]

    run_id = f"{ns}/console-failed"

    def failed_view() -> Any:
        doc = api_get(console, "/api/runs/" + urllib.parse.quote(run_id, safe=""))
        return doc if doc["phase"] == "Failed" else None

    doc = wait_until(failed_view, timeout=30, what="the console to show the failed run")
    assert doc["failure"]["steps"] == [{"step": "explode", "message": doc["steps"][0]["message"]}]
    assert doc["steps"][0]["message"]
    assert any(c["type"] == "Succeeded" and c["status"] == "False" for c in doc["conditions"])
    log = api_get(console, "/api/runs/" + urllib.parse.quote(run_id, safe="") + "/logs/explode/1")
    assert "about to fail" in (log["text"] or "")

    listed = api_get(console, f"/api/runs?namespace={ns}&phase=Failed")
    assert [r["id"] for r in listed["runs"]] == [run_id] and listed["namespaces"] == [ns]
    assert listed["runs"][0]["namespace"] == ns
    assert api_get(console, "/api/runs?namespace=elsewhere")["total"] == 0
    source = api_get(console, "/api/source")["description"]
    assert source.startswith("cluster https://") and ns in source
