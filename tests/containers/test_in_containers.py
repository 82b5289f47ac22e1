"""Conveyor installed by helm and run in its own images on a real kubelet node with containerd.

One module, one story, in order, on the container stack (its own control plane serving on the pod
bridge's gateway, a kubelet with containerd, MinIO on the gateway): the three images built by
`hack/images.sh` and imported into the node's containerd; `helm install charts/conveyor` with two
operator replicas peering; the breast-cancer example with every built-in step in the step image;
a container step in a user image built FROM the step image; a step over its memory limit
OOMKilled by the kernel and retried; the step's result read from its real termination message and
its log from `kubectl logs` and, after its pod is gone, `conveyor logs`; a ModelDeployment served
from the server image, rolled and then canaried under a bounded request loop with no failed
request; the active operator pod force-deleted mid-Run and the other replica finishing it with no
step run twice. The Run namespace enforces PodSecurity `restricted`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from sklearn.datasets import load_breast_cancer

from testenv.containerstack import ContainerStack
from testenv.dashboards import dashboard_queries
from testenv.images import ProjectImages, build_project_images
from testenv.processes import wait_until
from testenv.prometheus import PrometheusServer, kubernetes_pods_job, prometheus_config
from testenv.release import PEERING, RELEASE_NS, Release, install
from testenv.service import Load, Router, infer_body

pytestmark = pytest.mark.containers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "breast-cancer" / "pipeline.yaml"
GROUP, VERSION = "conveyor.dev", "v1alpha1"
MD = "cancer"
X, Y = load_breast_cancer(return_X_y=True, as_frame=True)

STATE: dict[str, Any] = {}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def images() -> ProjectImages:
    """The operator, step and server images, built by hack/images.sh (seconds when nothing changed)."""
    return build_project_images()


@pytest.fixture(scope="module")
def release(container_stack: ContainerStack, images: ProjectImages) -> Iterator[Release]:
    """`helm install charts/conveyor`: two peering replicas from the operator image, the chart's RBAC only."""
    rel = install(container_stack, images)
    yield rel
    rel.uninstall()


@pytest.fixture(scope="module")
def prometheus(release: Release) -> Iterator[PrometheusServer]:
    """A real Prometheus on the host scraping the operator pods and the model-server pods by their pod IPs."""
    cp = release.stack.control_plane
    config = prometheus_config([
        # honor_labels: keep the operator's Run namespace label, as the chart's ServiceMonitor does
        kubernetes_pods_job("operator", cp.kubeconfig, namespaces=[RELEASE_NS], port_name="metrics",
                            label_selector="app.kubernetes.io/name=conveyor", honor_labels=True),
        kubernetes_pods_job("servers", cp.kubeconfig, namespaces=[release.run_ns], port_name="http",
                            label_selector="conveyor.dev/model-deployment"),
    ])  # fmt: skip
    with PrometheusServer(config, cp.log_dir) as prom:
        prom.wait_for_targets("operator", count=2)
        STATE["scraping_since"] = time.time()
        yield prom


@pytest.fixture
def api(release: Release) -> Iterator[k8s_client.ApiClient]:
    with release.api() as client:
        yield client


# ---------------------------------------------------------------- helpers


def create(api: k8s_client.ApiClient, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    obj: Any = k8s_client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)
    return dict(obj)


def get(api: k8s_client.ApiClient, ns: str, plural: str, name: str) -> dict[str, Any]:
    obj: Any = k8s_client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
    return dict(obj)


def run_body(name: str, pipeline: str, **params: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Run",
        "metadata": {"name": name},
        "spec": {"pipelineRef": {"name": pipeline}, "parameters": params},
    }


def pipeline_body(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Pipeline", "metadata": {"name": name}, "spec": {"steps": steps}}


def wait_run(release: Release, api: k8s_client.ApiClient, name: str, timeout: float = 420) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = get(api, release.run_ns, "runs", name)
        return run if run.get("status", {}).get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    try:
        return wait_until(done, timeout=timeout, what=f"run {name} to finish", interval=1.0)  # type: ignore[no-any-return]
    except Exception:
        print(json.dumps(get(api, release.run_ns, "runs", name).get("status"), indent=1)[-6000:])
        print(release.operator_logs()[-6000:])
        raise


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["status"]["steps"]}


def jobs_of(api: k8s_client.ApiClient, ns: str, run: str) -> list[Any]:
    return list(k8s_client.BatchV1Api(api).list_namespaced_job(ns, label_selector=f"conveyor.dev/run={run}").items)


def pods_of(api: k8s_client.ApiClient, ns: str, run: str) -> list[Any]:
    return list(k8s_client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"conveyor.dev/run={run}").items)


def example_pipeline(name: str, n_estimators: int = 20) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name}
    for p in body["spec"]["parameters"]:
        if p["name"] == "n_estimators":
            p["default"] = n_estimators
    return body


def step_record(run: dict[str, Any], step: str) -> dict[str, Any]:
    return steps_of(run)[step]


# ---------------------------------------------------------------- the story


def test_the_chart_runs_two_operator_pods_from_the_operator_image_and_one_is_active(
    release: Release, api: k8s_client.ApiClient, prometheus: PrometheusServer
) -> None:
    # `prometheus` is started here, before the story, so the dashboard's rate() panels have its samples
    pods = release.operator_pods()
    assert len(pods) == 2, [p.metadata.name for p in pods]
    for pod in pods:
        c = pod.spec.containers[0]
        assert c.image == release.images.operator
        assert not c.args  # no `--standalone` from the image or the chart: peering decides
        status = pod.status.container_statuses[0]
        assert status.ready and status.started, (pod.metadata.name, status)
        assert status.restart_count == 0, (pod.metadata.name, status)
        assert pod.spec.security_context.run_as_user == 65532
        assert c.security_context.read_only_root_filesystem is True
        assert pod.status.pod_ip and pod.status.pod_ip != pod.status.host_ip
    # both replicas announced themselves in kopf's peering object (that only one works is shown by the
    # fail-over test: one pod's log creates every Job until it is killed)
    peering: Any = k8s_client.CustomObjectsApi(api).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", PEERING
    )
    assert len(peering.get("status") or {}) == 2, peering.get("status")


def test_the_example_runs_with_every_built_in_step_in_the_step_image(
    release: Release, api: k8s_client.ApiClient
) -> None:
    ns = release.run_ns
    create(api, ns, "pipelines", example_pipeline("breast-cancer"))
    create(api, ns, "runs", run_body("example", "breast-cancer"))
    run = wait_run(release, api, "example")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    by_step = steps_of(run)
    assert run["status"]["progress"] == "6/6"
    assert by_step["evaluate"]["metrics"]["roc_auc"] >= 0.97
    STATE["example"] = run
    # every step ran as a pod of the step image on the real node, admitted under `restricted`
    pods = pods_of(api, ns, "example")
    assert sorted(p.metadata.labels["conveyor.dev/step"] for p in pods) == sorted(by_step)
    for pod in pods:
        assert pod.spec.containers[0].image == release.images.step
        assert pod.spec.node_name == release.stack.node.node_name
        terminated = pod.status.container_statuses[0].state.terminated
        assert terminated is not None and terminated.exit_code == 0 and terminated.reason == "Completed"
    # every recorded artifact is in MinIO with the recorded digest
    minio = release.stack.minio.endpoint
    s3 = minio.client()
    try:
        for step in by_step.values():
            for out in step["outputs"]:
                key = out["uri"].split(f"s3://{minio.bucket}/", 1)[1]
                data = s3.get_object(Bucket=minio.bucket, Key=key)["Body"].read()
                assert "sha256:" + hashlib.sha256(data).hexdigest() == out["digest"], (step["name"], out["name"])
    finally:
        s3.close()


def test_results_come_through_the_termination_message_and_logs_survive_the_pod(
    release: Release, api: k8s_client.ApiClient, tmp_path: Path
) -> None:
    ns = release.run_ns
    run = STATE["example"]
    pod = next(p for p in pods_of(api, ns, "example") if p.metadata.labels["conveyor.dev/step"] == "evaluate")
    message = pod.status.container_statuses[0].state.terminated.message
    assert message, "the step wrote no termination message"
    json.loads(message)  # the TaskResult, whole
    digests = [o["digest"] for o in step_record(run, "evaluate")["outputs"]]
    assert digests and all(d in message for d in digests), (message[:500], digests)
    # `kubectl logs` through the API server and the kubelet
    logs = release.kubectl("logs", "-n", ns, pod.metadata.name).stdout
    assert "step evaluate succeeded" in logs, logs[-2000:]
    # the pods go; `conveyor logs` reads the archived log from the store
    for job in jobs_of(api, ns, "example"):
        k8s_client.BatchV1Api(api).delete_namespaced_job(job.metadata.name, ns, propagation_policy="Foreground")
    wait_until(lambda: not pods_of(api, ns, "example"), timeout=90, what="the example's pods to be gone")
    minio = release.stack.minio.endpoint
    env = {
        **os.environ,
        "KUBECONFIG": str(release.stack.control_plane.kubeconfig),
        "CONVEYOR_S3_ENDPOINT": minio.endpoint,
        "CONVEYOR_S3_BUCKET": minio.bucket,
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        "AWS_DEFAULT_REGION": minio.region,
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("conveyor")), "logs", "example", "evaluate", "-n", ns],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "step evaluate succeeded" in done.stdout, done.stdout[-2000:]


USER_DOCKERFILE = """\
FROM {step_image}
COPY score.py /opt/user/score.py
"""

USER_SCRIPT = """\
import json, os, sys
import pandas as pd
rows = len(pd.read_parquet(sys.argv[1]))  # the ingest component writes Parquet
print(f"user step read {rows} rows as uid {os.getuid()}")
with open(os.environ["CONVEYOR_METRICS_FILE"], "w") as f:
    json.dump({"rows": rows, "uid": os.getuid()}, f)
"""


def test_a_container_step_runs_in_a_user_image_built_from_the_step_image(
    release: Release, api: k8s_client.ApiClient, tmp_path: Path
) -> None:
    context = tmp_path / "user-image"
    context.mkdir()
    (context / "Dockerfile").write_text(USER_DOCKERFILE.format(step_image=release.images.step))
    (context / "score.py").write_text(USER_SCRIPT)
    image = "conveyor-test/user-step:1"
    release.images.build_context(context, image)
    release.stack.node.import_image(image)
    ns = release.run_ns
    create(api, ns, "pipelines", pipeline_body("user-image", [
        {"name": "ingest", "uses": "ingest", "with": {"source": "sklearn://breast_cancer"}},
        {
            "name": "score",
            "container": {"image": image, "command": ["python", "/opt/user/score.py", "{{ inputs.data }}"]},
            "inputs": [{"name": "data", "step": "ingest", "output": "dataset"}],
        },
    ]))  # fmt: skip
    create(api, ns, "runs", run_body("user-image", "user-image"))
    run = wait_run(release, api, "user-image")
    assert run["status"]["phase"] == "Succeeded", json.dumps(run["status"])[-3000:]
    assert step_record(run, "score")["metrics"] == {"rows": 569, "uid": 65532}
    pod = next(p for p in pods_of(api, ns, "user-image") if p.metadata.labels["conveyor.dev/step"] == "score")
    assert pod.spec.containers[0].image == image


def test_a_step_over_its_memory_limit_is_oom_killed_reported_and_retried(
    release: Release, api: k8s_client.ApiClient
) -> None:
    ns = release.run_ns
    hog = "b = bytearray(1024 * 1024 * 1024); print(len(b))"
    create(api, ns, "pipelines", pipeline_body("oom", [{
        "name": "hog",
        "container": {"image": release.images.step, "command": ["python", "-c", hog]},
        "resources": {"memory": "96Mi"},
        "retries": {"limit": 1, "backoff": {"initialSeconds": 1}},
    }]))  # fmt: skip
    create(api, ns, "runs", run_body("oom", "oom"))
    run = wait_run(release, api, "oom")
    assert run["status"]["phase"] == "Failed", run["status"]
    hog_step = step_record(run, "hog")
    assert hog_step["attempts"] == 2, hog_step  # the retry happened
    assert "OOMKilled" in json.dumps(run["status"]), run["status"]
    pods = pods_of(api, ns, "oom")
    assert len(pods) == 2
    for pod in pods:
        terminated = pod.status.container_statuses[0].state.terminated
        assert terminated.reason == "OOMKilled" and terminated.exit_code == 137, terminated


def test_a_model_deployment_serves_from_the_server_image_and_rolls_without_a_failed_request(
    release: Release, api: k8s_client.ApiClient
) -> None:
    ns = release.run_ns
    create(api, ns, "runs", run_body("second-model", "breast-cancer", seed=7))
    second = wait_run(release, api, "second-model")
    assert second["status"]["phase"] == "Succeeded", second["status"]
    create(api, ns, "runs", run_body("third-model", "breast-cancer", seed=11))
    third = wait_run(release, api, "third-model")
    assert third["status"]["phase"] == "Succeeded", third["status"]
    models = [next(o for o in step_record(r, "train")["outputs"] if o["name"] == "model") for r in
              (STATE["example"], second, third)]  # fmt: skip
    assert len({m["digest"] for m in models}) == 3
    first, rolled, canaried = models

    def model_spec(m: dict[str, Any]) -> dict[str, Any]:
        return {"uri": m["uri"], "digest": m["digest"]}

    create(api, ns, "modeldeployments", {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": MD},
        # 300m instead of the default 500m: two stable, two canary and one surge pod must fit beside the
        # operator pods on this one 2-core node (at 500m the second canary pod stays Pending: no room)
        "spec": {"model": model_spec(first), "autoscaling": {"minReplicas": 2, "maxReplicas": 2},
                 "server": {"cpu": "300m"},
                 "monitoring": {"drift": {"threshold": 0.2, "windowSeconds": 10}, "minLabels": 10,
                                "minAccuracy": 0.5, "predictionSampleRate": 1.0}},
    })  # fmt: skip

    def md() -> dict[str, Any]:
        return get(api, ns, "modeldeployments", MD)

    def wait_md(what: str, check: Any, timeout: float = 300) -> dict[str, Any]:
        try:
            return wait_until(lambda: (m := md()) and check(m) and m, timeout=timeout, what=what, interval=1.0)  # type: ignore[no-any-return]
        except Exception:
            print(json.dumps(md().get("status"), indent=1))
            print(release.operator_logs()[-6000:])
            raise

    def ready(m: dict[str, Any]) -> bool:
        conds = {c["type"]: c for c in m.get("status", {}).get("conditions", [])}
        return conds.get("Ready", {}).get("status") == "True" and m["status"].get("readyReplicas", 0) >= 2

    wait_md("the first model to serve", lambda m: ready(m) and m["status"]["current"]["digest"] == first["digest"])
    server_pods = k8s_client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"conveyor.dev/model-deployment={MD}")
    assert {p.spec.containers[0].image for p in server_pods.items} == {release.images.server}
    rows = X.to_numpy()
    with Router(api, ns, MD) as router:
        wait_until(lambda: len(router.endpoints) >= 2, timeout=60, what="two ready endpoints")
        status, body = router.request("POST", f"/v2/models/{MD}/infer", infer_body(rows[:10], "first"))
        assert status == 200 and body["id"] == "first", body
        with Load(router, MD, rows, limit=20_000) as load:
            k8s_client.CustomObjectsApi(api).patch_namespaced_custom_object(
                GROUP, VERSION, ns, "modeldeployments", MD, {"spec": {"model": model_spec(rolled)}}
            )
            wait_md("the rolling update", lambda m: ready(m) and m["status"]["current"]["digest"] == rolled["digest"])
            time.sleep(5)  # old pods drain under load
        assert load.ok > 100, load.ok
        assert load.failures == [], load.failures[:5]
        assert md()["status"]["previous"]["digest"] == first["digest"]
        # a canary: half the replicas, then all, judged on its own answers, promoted, then removed
        canary_spec = {
            "model": model_spec(canaried),
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 50, "pauseSeconds": 5}, {"weight": 100, "pauseSeconds": 5}],
                "analysis": {"maxErrorRate": 0.01, "minRequests": 10},
            },
        }
        with Load(router, MD, rows, limit=40_000) as load:
            k8s_client.CustomObjectsApi(api).patch_namespaced_custom_object(
                GROUP, VERSION, ns, "modeldeployments", MD, {"spec": canary_spec}
            )
            wait_md("a canary to start", lambda m: (m["status"].get("canary") or {}).get("model", {}).get("digest")
                    == canaried["digest"], timeout=120)  # fmt: skip
            wait_md("the canary to be promoted", lambda m: ready(m) and not m["status"].get("canary")
                    and m["status"]["current"]["digest"] == canaried["digest"], timeout=420)  # fmt: skip
            time.sleep(5)  # the canary's pods drain under load
        assert load.failures == [], load.failures[:5]
        served = dict(load.versions)
        assert served.get(canaried["digest"].removeprefix("sha256:")[:12], 0) >= 10, served  # the canary served
        status = md()["status"]
        assert status["previous"]["digest"] == rolled["digest"] and not status.get("rejected"), status
        # labels fed back for 30 predictions: live accuracy per version, and drift measured on the live inputs
        for i in range(30):
            code, body = router.request("POST", f"/v2/models/{MD}/infer", infer_body(rows[i : i + 1], f"fb{i}"))
            assert code == 200, body
            code, body = router.request("POST", f"/v2/models/{MD}/feedback", {"id": f"fb{i}", "row": 0,
                                                                               "label": int(Y.iloc[i])})  # fmt: skip
            assert code == 202, body
        monitored = wait_md("live accuracy from the fed-back labels", lambda m: any(
            a.get("labels", 0) >= 10 for a in m["status"].get("liveAccuracy", [])), timeout=180)  # fmt: skip
        STATE["live_accuracy_in_status"] = time.time()
        live = next(a for a in monitored["status"]["liveAccuracy"] if a["labels"] >= 10)
        assert live["accuracy"] >= 0.8, live  # the model is right about most of its own training rows
        assert monitored["status"].get("drift", {}).get("score") is not None, monitored["status"].get("drift")
        STATE["served_ok"] = load.ok + 30
    reasons = [e.reason for e in k8s_client.CoreV1Api(api).list_namespaced_event(ns).items
               if e.involved_object.kind == "ModelDeployment" and e.involved_object.name == MD]  # fmt: skip
    for reason in ("CanaryStarted", "CanaryStep", "CanaryPassed", "Promoted"):
        assert reason in reasons, reasons
    deployments = {d.metadata.name for d in k8s_client.AppsV1Api(api).list_namespaced_deployment(ns).items}
    assert f"{MD}-canary" not in deployments, deployments


def test_prometheus_scrapes_the_operator_and_server_pods_and_counts_what_the_story_did(
    release: Release, api: k8s_client.ApiClient, prometheus: PrometheusServer
) -> None:
    ns = release.run_ns
    prometheus.wait_for_targets("servers", count=2)
    runs = k8s_client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, ns, "runs")["items"]
    phases = [r["status"]["phase"] for r in runs]
    # the operator's counters match what the story did (one active replica counts; the standby has none)
    for result, phase in (("succeeded", "Succeeded"), ("failed", "Failed")):
        expected = phases.count(phase)
        expr = f'sum(conveyor_runs_total{{namespace="{ns}",result="{result}"}})'
        got = prometheus.wait_for_data(expr, lambda r, n=expected: bool(r) and r[0].value == n)
        assert got[0].value == expected > 0, (expr, got, phases)
    served = prometheus.wait_for_data(f'sum(conveyor_server_requests_total{{namespace="{ns}",code="200"}})')
    assert served[0].value >= 30, served  # at least the feedback loop's requests, on the pods serving now


# What a dashboard panel may show: ratios within [0, 1], durations within the story's length, the rest
# counts or levels that are never negative. A panel whose title says none of these is refused.
PANEL_BOUNDS: dict[str, tuple[float, float]] = {
    "ratio": (0.0, 1.0),
    "rate": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "drift": (0.0, 1.0),
    "duration": (0.0, 900.0),
    "overhead": (0.0, 900.0),
    "latency": (0.0, 900.0),
    "errors": (0.0, 1e9),
    "running": (0.0, 1e9),
    "result": (0.0, 1e9),
    "code": (0.0, 1e9),
    "replicas": (0.0, 1e9),
    "version": (1.0, 1.0),
    "reads": (0.0, 1e9),
    "variable": (0.0, 1e9),
}


def panel_bounds(title: str) -> tuple[float, float]:
    # Whole words: "duration" holds "ratio", and a step's seconds are no ratio.
    words = set(re.findall(r"[a-z0-9]+", title.lower()))
    found = [bounds for word, bounds in PANEL_BOUNDS.items() if word in words]
    assert found, f"panel {title!r}: no plausible range known for it (add one to PANEL_BOUNDS)"
    return found[0]


def explain_missing_live_accuracy(release: Release, api: k8s_client.ApiClient, prometheus: PrometheusServer) -> None:
    """What each operator pod exports of its models, what Prometheus holds and how its scrapes went."""
    ns = release.run_ns
    for pod in release.operator_pods():
        port = next(p.container_port for c in pod.spec.containers for p in c.ports or [] if p.name == "metrics")
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:{port}/metrics", timeout=10) as r:
            lines = [ln for ln in r.read().decode().splitlines() if ln.startswith("conveyor_model_")]
        print(f"{pod.metadata.name}: " + "\n  ".join(lines))
    print("status.liveAccuracy:", get(api, ns, "modeldeployments", MD)["status"].get("liveAccuracy"))
    for sample in prometheus.query('{__name__=~"conveyor_model_.*"}'):
        print("in Prometheus:", sample.labels, sample.value)
    for t in prometheus.targets():
        print(f"target {t.job} {t.scrape_url} {t.health} {t.last_error!r}")


def test_every_dashboard_query_returns_plausible_data_for_the_story(
    release: Release, api: k8s_client.ApiClient, prometheus: PrometheusServer
) -> None:
    """Every PromQL expression of the chart's dashboard, variables filled in as Grafana would, over the story.

    Each is a range query over the time Prometheus has scraped (as the dashboard's time picker would
    show it): it must return at least one series with a finite value somewhere, and every finite value
    must lie in its panel's plausible range. A query with no data fails naming its panel.
    """
    ns = release.run_ns
    # The operator exports a version's live accuracy once a pass has joined its labels, at the story's end:
    # the window ends once it is in Prometheus, and on a step of the range queries' grid (which counts
    # back from the end), so a series born in the last step is evaluated.
    try:
        prometheus.wait_for_data(f'conveyor_model_live_accuracy{{namespace="{ns}"}}', timeout=180)
    except TimeoutError:
        explain_missing_live_accuracy(release, api, prometheus)
        raise
    lag = time.time() - STATE["live_accuracy_in_status"]
    print(f"[containers] live accuracy in Prometheus at most {lag:.0f}s after the status showed it")
    end = time.time()
    start = end - 15 * math.ceil((end - STATE["scraping_since"]) / 15)
    span = f"{max(60, int(end - start))}s"
    queries = list(dashboard_queries({"namespace": [ns], "datasource": "prometheus"}, range_=span,
                                     rate_interval="1m", interval="15s"))  # fmt: skip
    assert len(queries) >= 25, [q.panel for q in queries]
    empty, implausible = [], []
    for q in queries:
        if q.kind == "variable":
            values = {s.labels.get("namespace") for s in prometheus.query(q.expr)}
            if ns not in values:
                empty.append(f"{q.panel}: {ns} is not among {sorted(v for v in values if v)}")
            continue
        series = prometheus.query_range(q.expr, start, end, step=15)
        finite = [v for s in series for _, v in s.values if math.isfinite(v)]
        if not finite:
            empty.append(f"{q.panel} ({q.ref_id}): {q.expr}")
            continue
        low, high = panel_bounds(q.panel)
        if not all(low <= v <= high for v in finite):
            implausible.append(f"{q.panel} ({q.ref_id}): values {min(finite)}..{max(finite)} outside "
                               f"[{low}, {high}]: {q.expr}")  # fmt: skip
    assert empty == [], "dashboard queries with no data:\n" + "\n".join(empty)
    assert implausible == [], "\n".join(implausible)
    # the counts panels add up to what the story did: every Run that finished is in "Runs finished by result"
    runs = k8s_client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, ns, "runs")["items"]
    finished = sum(r["status"]["phase"] in ("Succeeded", "Failed") for r in runs)
    total = prometheus.query(f'sum(increase(conveyor_runs_total{{namespace="{ns}"}}[{span}]))')
    # increase() extrapolates to the window's edges and misses a Run counted before the first scrape
    assert total and 0.5 * finished <= total[0].value <= 1.5 * finished, (total, finished)


def test_the_active_operator_pod_force_deleted_mid_run_the_other_replica_finishes_it_running_nothing_twice(
    release: Release, api: k8s_client.ApiClient
) -> None:
    ns = release.run_ns
    slow = "import time; time.sleep(4); print('{}')"
    create(api, ns, "pipelines", pipeline_body("failover", [
        {"name": "one", "container": {"image": release.images.step, "command": ["python", "-c", slow.format("one")]}},
        {"name": "two", "container": {"image": release.images.step, "command": ["python", "-c", slow.format("two")]},
         "dependsOn": ["one"]},
        {"name": "three", "container": {"image": release.images.step,
                                        "command": ["python", "-c", slow.format("three")]}, "dependsOn": ["two"]},
    ]))  # fmt: skip
    create(api, ns, "runs", run_body("failover", "failover"))

    def step_running(name: str) -> bool:
        run = get(api, ns, "runs", "failover")
        return any(s["name"] == name and s["phase"] == "Running" for s in run.get("status", {}).get("steps", []))

    wait_until(lambda: step_running("one"), timeout=120, what="step one to start")
    logs = {p.metadata.name: release.kubectl("logs", "-n", RELEASE_NS, p.metadata.name).stdout
            for p in release.operator_pods()}  # fmt: skip
    active = [n for n, text in logs.items() if "created Job" in text]
    assert len(active) == 1, {k: v[-1500:] for k, v in logs.items()}
    release.kubectl("delete", "pod", "-n", RELEASE_NS, active[0], "--grace-period=0", "--force")
    run = wait_run(release, api, "failover", timeout=240)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    per_step = sorted(j.metadata.labels["conveyor.dev/step"] for j in jobs_of(api, ns, "failover"))
    assert per_step == ["one", "three", "two"]  # each step executed exactly once
    assert all(s["attempts"] == 1 for s in run["status"]["steps"]), run["status"]["steps"]
    # another operator pod took over: the standby, or the Deployment's replacement if it drew the higher priority
    others = [p.metadata.name for p in release.operator_pods() if p.metadata.name != active[0]]
    assert any("created Job" in release.kubectl("logs", "-n", RELEASE_NS, name).stdout for name in others), others
    # the Deployment replaces the deleted pod, which joins as a standby
    wait_until(lambda: len([p for p in release.operator_pods() if p.status.container_statuses
                            and p.status.container_statuses[0].ready]) == 2,
               timeout=180, what="two ready operator pods again")  # fmt: skip
