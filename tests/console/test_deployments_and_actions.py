"""ModelDeployments pages and the console's actions (cancel, rerun, approve, reject) with CSRF protection.

The console runs in this process over the cluster source (tests/console/test_cluster_views.py's
FakeReader, taught ModelDeployments and Events) and the CLI's own action functions over a fake
cluster client that records every write, served on loopback by the standard library's server; a
real Chromium drives it. What the pages show is asserted against the objects the tests made; the
forged requests are asserted to change nothing (no write reaches the fake cluster).
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from console.harness import Console, Watched, call
from console.test_cluster_views import SPEC, Clock, FakeReader, run_body
from conveyor.api.pipeline import PipelineSpec
from conveyor.console.actions import ClusterActions
from conveyor.console.app import ConsoleApp
from conveyor.console.cluster import ClusterSource
from conveyor.console.server import bind, threaded_server, url_of
from conveyor.core.record import record_document
from conveyor.lifecycle.specs import store_spec
from conveyor.storage.local import LocalStore

NS = "team-a"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
T1 = "2026-12-07T11:00:00Z"


def deployment(name: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS, "uid": f"md-{name}", "generation": 3},
        "spec": {
            "model": {"pipeline": {"name": "iris", "follow": True}},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 5},
            "rollout": {"strategy": "Canary", "steps": [{"weight": 10}, {"weight": 50}]},
            "monitoring": {"drift": {"threshold": 0.2}, "minAccuracy": 0.8, "retrain": {"pipeline": "iris"}},
        },
        "status": status,
    }


IRIS = deployment(
    "iris",
    observedGeneration=3,
    current={"uri": "s3://models/v7?X-Amz-Signature=abcdEFGH1234", "digest": D1, "version": "v7"},
    previous={"uri": "s3://models/v6", "digest": D2, "version": "v6"},
    canary={
        "model": {"uri": "s3://models/v8", "digest": D3, "version": "v8"},
        "step": 1,
        "requests": 321,
        "errorRate": 0.0125,
    },
    readyReplicas=3,
    traffic=[{"digest": D1, "weight": 50}, {"digest": D3, "weight": 50}],
    conditions=[
        {"type": "Ready", "status": "True", "reason": "Serving", "message": "3 replicas", "lastTransitionTime": T1},
        {"type": "Progressing", "status": "True", "reason": "CanaryStep", "message": "<b>step 2</b>"},
    ],
    drift={
        "score": 0.4321,
        "rows": 900,
        "aboveSince": T1,
        "features": [{"name": "petal_length", "score": 0.61, "measure": "MeanShift", "drifted": True}],
    },
    driftScore=0.4321,
    liveAccuracy=[
        {"version": "v7", "labels": 120, "accuracy": 0.875},
        {"version": "v8", "labels": 30, "accuracy": 0.9333},
    ],
    retraining={"run": "iris-retrain-1", "reason": "Drift", "message": "drift 0.43 above 0.2", "at": T1},
)
QUIET = deployment("quiet", readyReplicas=0)


def event(reason: str, message: str, at: str, type_: str = "Normal") -> dict[str, Any]:
    return {
        "metadata": {"name": f"iris.{reason}", "namespace": NS},
        "involvedObject": {"kind": "ModelDeployment", "name": "iris"},
        "type": type_,
        "reason": reason,
        "message": message,
        "lastTimestamp": at,
        "count": 2,
    }


class ClusterFake(FakeReader):
    """The API server both sides see: the console's reads (FakeReader) and the CLI's writes, each recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.deployments: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.writes: list[tuple[Any, ...]] = []

    def list_custom(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        if plural == "modeldeployments":
            self.calls.append(("list", plural, str(namespace)))
            return [d for d in self.deployments if namespace is None or d["metadata"]["namespace"] == namespace]
        return super().list_custom(plural, namespace)

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        if plural == "modeldeployments":
            return next((d for d in self.deployments if d["metadata"]["name"] == name), None)
        found = super().get_custom(plural, namespace, name)
        return copy.deepcopy(found)

    def events_of(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        self.calls.append(("events", namespace, kind, name))
        return [e for e in self.events if (e["involvedObject"]["kind"], e["involvedObject"]["name"]) == (kind, name)]

    # the writes kube.cluster.Cluster makes for the CLI
    def _body(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next(
            (r for r in self.runs if (r["metadata"]["namespace"], r["metadata"]["name"]) == (namespace, name)), None
        )

    def add_approval(self, namespace: str, run: str, approval: dict[str, Any]) -> dict[str, Any]:
        body = self._body(namespace, run)
        assert body is not None
        self.writes.append(("approve", namespace, run, approval))
        body["spec"].setdefault("approvals", []).append(approval)
        for s in body["status"]["steps"]:
            if s["name"] == approval["step"]:  # what the operator then does
                s["phase"], s["message"] = (
                    ("Running", None) if approval["decision"] == "Approve" else ("Failed", "rejected")
                )
        return body

    def patch_run_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> bool:
        body = self._body(namespace, name)
        if body is None:
            return False
        self.writes.append(("patch", namespace, name, spec))
        body["spec"].update(spec)
        return True

    def create_run(self, run: dict[str, Any]) -> bool:
        self.writes.append(("create", run["metadata"]["namespace"], run["metadata"]["name"]))
        if self._body(run["metadata"]["namespace"], run["metadata"]["name"]) is not None:
            return False
        created = copy.deepcopy(run)
        created["metadata"].update(uid=f"uid-{run['metadata']['name']}", creationTimestamp=T1)
        created["status"] = {"phase": "Pending", "steps": []}
        self.runs.append(created)
        return True


def gated_run(name: str) -> dict[str, Any]:
    body = run_body(name)
    body["status"]["steps"][1].update(phase="Waiting", message="waiting for approval: check the <metrics>", attempts=0)
    return body


def finished_run(name: str, store: LocalStore) -> dict[str, Any]:
    """A Succeeded Run whose record and spec are stored, so the CLI's rerun can read both."""
    body = run_body(name, phase="Succeeded", recordUri=f"s3://b/docs/runs/{name}/record.json")
    for s in body["status"]["steps"]:
        s["phase"] = "Succeeded"
    digest = store_spec(store, PipelineSpec.model_validate(SPEC), "p")
    uid = body["metadata"]["uid"]
    record = {
        "kind": "RunRecord",
        "runId": uid,
        "name": name,
        "namespace": NS,
        "pipeline": "p",
        "phase": "Succeeded",
        "pipelineSpecDigest": digest,
        "startedAt": "2026-12-07T10:00:00+00:00",
        "parameters": {"rate": 0.5},
        "steps": [{"name": s["name"], "phase": "Succeeded", "outputs": [], "logs": []} for s in SPEC["steps"]],
    }
    store.put_document(record_document(uid), record)
    return body


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> ClusterFake:
    return ClusterFake()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    return LocalStore(tmp_path_factory.mktemp("store"))


ACTIONS_TOKEN = "test-actions-token-1234567890"


def app_over(
    cluster: ClusterFake,
    store: LocalStore,
    actions: bool,
    hosts: frozenset[str] | None = None,
    token: str | None = None,
) -> ConsoleApp:
    clock = Clock()
    source = ClusterSource(cluster, store, (NS,), clock=clock, ttl=0.0)  # type: ignore[arg-type]
    acts = ClusterActions(cluster, store, (NS,), source.changed) if actions else None
    return ConsoleApp(source, hosts, acts, token.encode() if token else None)


def give_token(pg: Any, token: str = ACTIONS_TOKEN) -> None:
    """Type the actions token into the run page's field, as a person given it does."""
    pg.locator("#actions-token").fill(token)


@pytest.fixture(scope="module")
def console(cluster: ClusterFake, store: LocalStore) -> Iterator[Console]:
    """The console with actions on, served on a free loopback port in this process (a thread)."""
    import threading

    sock = bind("127.0.0.1", 0)
    app = app_over(cluster, store, True, frozenset({"127.0.0.1"}), ACTIONS_TOKEN)
    with threaded_server(app, sock) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield Console(url_of(sock), None)  # type: ignore[arg-type]
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def objects(cluster: ClusterFake, store: LocalStore) -> None:
    """Every test starts from the same objects; the writes list is emptied."""
    cluster.deployments = [copy.deepcopy(IRIS), copy.deepcopy(QUIET)]
    cluster.events = [
        event("CanaryStarted", "canary v8 at 10 %", "2026-12-07T11:01:00Z"),
        event("DriftDetected", "drift 0.43 above 0.2 (token=s3cr3t-value)", "2026-12-07T11:05:00Z", "Warning"),
    ]
    cluster.runs = [
        gated_run("gated"),
        run_body("busy"),
        finished_run("done", store),
        run_body("iris-retrain-1"),
        run_body("other", ns="team-b"),
    ]
    cluster.writes = []


# ------------------------------------------------------------------ ModelDeployments in the browser


def test_the_deployments_list_shows_each_deployment_from_its_object(page: Watched) -> None:
    pg = page.page
    pg.goto("/deployments")
    rows = pg.locator("#deployments tr.deployment")
    expect(rows).to_have_count(2)
    iris = pg.locator(f'#deployments tr.deployment[data-deployment="{NS}/iris"]')
    expect(iris.locator("td.ready")).to_have_text("True")
    expect(iris.locator("td.replicas")).to_have_text("3")
    expect(iris.locator("td.current")).to_have_text("v7 " + D1[: len("sha256:") + 12])
    expect(iris.locator("td.canary")).to_contain_text("v8")
    expect(iris.locator("td.drift")).to_have_text("0.4321")
    expect(iris.locator("td.retraining")).to_have_text("iris-retrain-1")
    quiet = pg.locator(f'#deployments tr.deployment[data-deployment="{NS}/quiet"]')
    expect(quiet.locator("td.current")).to_have_text("-")
    expect(pg.locator('header nav a[aria-current="page"]')).to_have_text("Models")


def test_a_deployment_page_shows_models_replicas_conditions_drift_accuracy_retraining_and_events(
    page: Watched,
) -> None:
    pg = page.page
    pg.goto("/deployments")
    pg.locator(f'#deployments tr[data-deployment="{NS}/iris"] td.name a').click()
    expect(pg.locator("#deployment-name")).to_have_text(f"{NS}/iris")
    expect(pg.locator("#ready-replicas")).to_have_text("3")
    expect(pg.locator("table.current")).to_contain_text("v7")
    expect(pg.locator("table.current")).to_contain_text(D1)
    expect(pg.locator("table.current")).not_to_contain_text("abcdEFGH1234")  # a presigned URI's signature
    expect(pg.locator("table.canary")).to_contain_text("v8")
    expect(pg.locator("table.canary")).to_contain_text("2 of 2")
    expect(pg.locator("table.canary")).to_contain_text("321")
    expect(pg.locator("table.canary")).to_contain_text("1.25 %")
    expect(pg.locator("table.previous")).to_contain_text("v6")
    expect(pg.locator("table.traffic tbody tr")).to_have_count(2)
    conditions = pg.locator("table.conditions tbody tr")
    expect(conditions).to_have_count(2)
    expect(conditions.nth(0)).to_contain_text("Ready")
    expect(conditions.nth(1)).to_contain_text("<b>step 2</b>")  # as text, never as markup
    expect(pg.locator("#drift-score")).to_have_text("0.4321")
    expect(pg.locator("table.drift-features")).to_contain_text("petal_length")
    accuracy = pg.locator("table.live-accuracy tbody tr")
    expect(accuracy).to_have_count(2)
    expect(accuracy.nth(0)).to_contain_text("v7")
    expect(accuracy.nth(0)).to_contain_text("0.875")
    expect(accuracy.nth(1)).to_contain_text("v8")
    expect(accuracy.nth(1)).to_contain_text("0.9333")
    retraining = pg.locator("table.retraining")
    expect(retraining).to_contain_text("iris-retrain-1")
    expect(retraining).to_contain_text("Running")  # the retraining Run's own phase
    expect(retraining).to_contain_text("Drift: drift 0.43 above 0.2")
    events = pg.locator("table.events tbody tr")
    expect(events).to_have_count(2)
    expect(events.nth(0)).to_contain_text("DriftDetected")  # newest first
    expect(events.nth(1)).to_contain_text("CanaryStarted")
    retraining.locator("a").click()
    expect(pg.locator("#run-id")).to_have_text(f"{NS}/iris-retrain-1")


def test_a_deployment_page_follows_its_object(page: Watched, cluster: ClusterFake) -> None:
    pg = page.page
    pg.goto("/deployments/" + f"{NS}%2Fquiet")
    expect(pg.locator("#ready-replicas")).to_have_text("0")
    expect(pg.locator("p.live-accuracy")).to_have_text("no labelled predictions yet")
    quiet = next(d for d in cluster.deployments if d["metadata"]["name"] == "quiet")
    quiet["status"].update(readyReplicas=2, liveAccuracy=[{"version": "v1", "labels": 60, "accuracy": 0.5}])
    expect(pg.locator("#ready-replicas")).to_have_text("2")
    expect(pg.locator("table.live-accuracy")).to_contain_text("v1")


def test_unknown_or_foreign_deployments_are_not_found(cluster: ClusterFake, store: LocalStore) -> None:
    app = app_over(cluster, store, actions=False)
    for path in ("/api/deployments/team-a%2Fnope", "/api/deployments/team-b%2Firis", "/api/deployments/iris"):
        status, _, _ = call(app, "GET", path)
        assert status == 404, path


# ------------------------------------------------------------------ actions in the browser


def test_approve_a_waiting_step_with_the_pages_token(page: Watched, cluster: ClusterFake) -> None:
    pg = page.page
    pg.goto("/runs/" + f"{NS}%2Fgated")
    decision = pg.locator('#actions .decision[data-step="second"]')
    expect(decision).to_contain_text("waits for approval")
    give_token(pg)
    decision.locator("button.approve").click()
    expect(pg.locator("#action-result")).to_have_text("step second approved")
    assert cluster.writes == [
        ("approve", NS, "gated", {"step": "second", "decision": "Approve", "by": "conveyor console"})
    ]
    expect(pg.locator('details.step[data-step="second"]')).to_have_attribute("data-phase", "Running")
    expect(pg.locator("#actions .decision")).to_have_count(0)


def test_reject_cancel_and_rerun_with_the_pages_token(page: Watched, cluster: ClusterFake) -> None:
    pg = page.page
    pg.goto("/runs/" + f"{NS}%2Fgated")
    give_token(pg)  # once: the tab keeps it (sessionStorage) for the pages after
    pg.locator('#actions .decision[data-step="second"] button.reject').click()
    expect(pg.locator("#action-result")).to_have_text("step second rejected")
    assert cluster.writes[-1][3]["decision"] == "Reject"

    pg.goto("/runs/" + f"{NS}%2Fbusy")
    pg.locator("#actions button.cancel").click()
    expect(pg.locator("#action-result")).to_have_text(f"run {NS}/busy: cancel requested")
    assert cluster.writes[-1] == ("patch", NS, "busy", {"cancel": True})

    pg.goto("/runs/" + f"{NS}%2Fdone")
    expect(pg.locator("#actions button.cancel")).to_have_count(0)  # it has ended
    pg.locator("#actions button.rerun").click()
    expect(pg.locator("#action-result")).to_contain_text(f"created run {NS}/done-rerun-")
    created = cluster.runs[-1]
    assert created["metadata"]["labels"] == {"conveyor.dev/rerun-of": "done"}
    assert created["spec"]["parameters"] == {"rate": 0.5}
    assert all(s.get("cache", {}).get("enabled") is False for s in created["spec"]["pipelineSpec"]["steps"])
    pg.locator("#created-run").click()
    expect(pg.locator("#run-id")).to_have_text(f"{NS}/{created['metadata']['name']}")


def test_a_refused_action_says_why_and_changes_nothing(page: Watched, cluster: ClusterFake) -> None:
    pg = page.page
    pg.goto("/runs/" + f"{NS}%2Fgated")
    expect(pg.locator("#actions .decision")).to_have_count(1)
    answer = pg.evaluate(
        """async (url) => {
          const token = document.querySelector('meta[name="conveyor-csrf"]').content;
          const headers = { "X-Conveyor-CSRF": token, Authorization: "Bearer test-actions-token-1234567890" };
          const r = await fetch(url, { method: "POST", headers });
          return [r.status, (await r.json()).error];
        }""",
        f"/api/runs/{NS}%2Fgated/steps/first/approve",
    )
    assert answer[0] == 409 and "is not waiting for approval (waiting: second)" in answer[1]
    assert cluster.writes == []
    expected_refusals(page, 409)


def expected_refusals(page: Watched, *statuses: int) -> None:
    """Drop the browser's own report of the refusals a test asked for (it logs each failed request)."""
    page.errors[:] = [
        e for e in page.errors if not any(f"status of {s} " in e and "Failed to load resource" in e for s in statuses)
    ]


def test_forged_posts_without_or_with_a_wrong_token_are_refused_and_change_nothing(
    page: Watched, cluster: ClusterFake, console: Console
) -> None:
    pg = page.page
    pg.goto("/runs/" + f"{NS}%2Fbusy")  # a session cookie, as a person who has the console open has
    expect(pg.locator("#actions button.cancel")).to_be_visible()
    forged = pg.evaluate(
        """async (url) => {
          const out = [];
          for (const headers of [{}, {"X-Conveyor-CSRF": "0".repeat(64)}, {"X-Conveyor-CSRF": ""}]) {
            const r = await fetch(url, { method: "POST", headers });
            out.push([r.status, (await r.json()).error]);
          }
          return out;
        }""",
        f"/api/runs/{NS}%2Fbusy/cancel",
    )
    assert [status for status, _ in forged] == [403, 403, 403]
    assert all("CSRF token" in message for _, message in forged)
    # a page elsewhere: the browser sends the cookie only to same-site requests (SameSite=Strict), and its
    # Origin names the other site; neither gets through
    req = urllib.request.Request(
        console.url + f"api/runs/{NS}%2Fgated/steps/second/approve",
        method="POST",
        headers={"Origin": "http://evil.example", "X-Conveyor-CSRF": "x"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 403 and "another site" in json.loads(refused.value.read())["error"]
    token = pg.locator('meta[name="conveyor-csrf"]').get_attribute("content")
    assert token and len(token) == 64
    # the right token without its session's cookie is no good either
    req = urllib.request.Request(
        console.url + f"api/runs/{NS}%2Fbusy/cancel", method="POST", headers={"X-Conveyor-CSRF": token}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 403
    assert cluster.writes == []
    assert cluster.runs[1]["spec"].get("cancel") is not True
    expect(pg.locator("h1 .phase")).to_have_text("Running")
    expected_refusals(page, 403)


# ------------------------------------------------------------------ CSRF and method rules, no browser


def session_of(app: ConsoleApp) -> tuple[str, str]:
    """(cookie header value, token) of a new session, as a page load gives them."""
    status, headers, body = call(app, "GET", "/runs/x")
    assert status == 200
    cookie = headers[b"set-cookie"].decode()
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token = body.decode().split('name="conveyor-csrf" content="', 1)[1].split('"', 1)[0]
    return cookie.split(";", 1)[0], token


def test_tokens_are_per_session_and_checked_on_every_post(cluster: ClusterFake, store: LocalStore) -> None:
    app = app_over(cluster, store, actions=True)
    cookie_a, token_a = session_of(app)
    cookie_b, token_b = session_of(app)
    assert cookie_a != cookie_b and token_a != token_b and len(token_a) == 64
    path = f"/api/runs/{NS}%2Fbusy/cancel"
    for headers in (
        [],
        [(b"cookie", cookie_a.encode())],
        [(b"cookie", cookie_a.encode()), (b"x-conveyor-csrf", token_b.encode())],  # another session's token
        [(b"x-conveyor-csrf", token_a.encode())],
        [(b"cookie", b"conveyor_session=forged"), (b"x-conveyor-csrf", token_a.encode())],
    ):
        status, _, body = call(app, "POST", path, headers)
        assert status == 403 and b"CSRF token" in body, headers
    assert cluster.writes == []
    status, _, body = call(app, "POST", path, [(b"cookie", cookie_a.encode()), (b"x-conveyor-csrf", token_a.encode())])
    assert status == 200 and json.loads(body)["action"] == "cancel"
    assert cluster.writes == [("patch", NS, "busy", {"cancel": True})]
    status, _, body = call(
        app,
        "POST",
        f"/api/runs/{NS}%2Fdone/cancel",
        [(b"cookie", cookie_a.encode()), (b"x-conveyor-csrf", token_a.encode())],
    )
    assert status == 409 and b"has ended already" in body
    status, _, _ = call(
        app,
        "POST",
        "/api/runs/team-b%2Fother/cancel",
        [(b"cookie", cookie_a.encode()), (b"x-conveyor-csrf", token_a.encode())],
    )
    assert status == 404  # not one of the console's namespaces
    status, _, _ = call(app, "GET", path)
    assert status == 404  # an action is never a GET
    for method in ("PUT", "DELETE", "PATCH"):
        status, _, _ = call(app, method, path, [(b"cookie", cookie_a.encode()), (b"x-conveyor-csrf", token_a.encode())])
        assert status == 405, method
    assert len(cluster.writes) == 1


def test_actions_are_off_by_default(cluster: ClusterFake, store: LocalStore) -> None:
    app = app_over(cluster, store, actions=False)
    cookie, token = session_of(app)
    assert token == ""  # no token is handed out: there is nothing to act on
    status, _, body = call(app, "GET", "/api/source")
    assert json.loads(body)["actions"] is False
    status, _, body = call(app, "POST", f"/api/runs/{NS}%2Fbusy/cancel", [(b"cookie", cookie.encode())])
    assert status == 405 and b"actions are off" in body
    assert cluster.writes == []


def test_the_cli_refuses_actions_on_a_local_state(tmp_path: Path) -> None:
    from conveyor.cli.main import main

    (tmp_path / "state").mkdir()
    assert main(["ui", "--state-dir", str(tmp_path / "state"), "--actions", "--port", "0"]) == 1


# ------------------------------------------------------------------ the actions token (bearer)


def test_the_page_asks_for_the_actions_token_and_a_wrong_one_changes_nothing(
    page: Watched, cluster: ClusterFake
) -> None:
    pg = page.page
    pg.goto("/runs/" + f"{NS}%2Fbusy")
    expect(pg.locator("#actions-token")).to_have_attribute("type", "password")
    pg.locator("#actions button.cancel").click()  # no token typed: nothing is sent
    expect(pg.locator("#action-result")).to_have_text("enter the console's actions token first")
    give_token(pg, "not-the-token-at-all")
    pg.locator("#actions button.cancel").click()
    expect(pg.locator("#action-result")).to_contain_text("need its actions token")
    assert cluster.writes == []
    assert pg.evaluate("sessionStorage.getItem('conveyor-actions-token')") is None  # a 401 forgets it
    give_token(pg)
    pg.locator("#actions button.cancel").click()
    expect(pg.locator("#action-result")).to_have_text(f"run {NS}/busy: cancel requested")
    assert cluster.writes == [("patch", NS, "busy", {"cancel": True})]
    assert pg.evaluate("sessionStorage.getItem('conveyor-actions-token')") == ACTIONS_TOKEN
    assert pg.context.cookies() and all(ACTIONS_TOKEN not in c["value"] for c in pg.context.cookies())
    expected_refusals(page, 401)


def test_a_session_and_csrf_token_without_the_actions_token_get_a_401(
    page: Watched, cluster: ClusterFake, console: Console
) -> None:
    """What any pod reaching the Service could do: load a page, take its cookie and token, and POST."""
    pg = page.page
    pg.goto("/runs/" + f"{NS}%2Fgated")
    expect(pg.locator("#actions .decision")).to_have_count(1)
    answers = pg.evaluate(
        """async (url) => {
          const csrf = document.querySelector('meta[name="conveyor-csrf"]').content;
          const out = [];
          for (const auth of [null, "Bearer wrong-token-wrong-token", "Basic dGVzdA==", "Bearer "]) {
            const headers = { "X-Conveyor-CSRF": csrf };
            if (auth !== null) headers.Authorization = auth;
            const r = await fetch(url, { method: "POST", headers });
            out.push([r.status, r.headers.get("WWW-Authenticate"), (await r.json()).error]);
          }
          return out;
        }""",
        f"/api/runs/{NS}%2Fgated/steps/second/approve",
    )
    assert [a[0] for a in answers] == [401, 401, 401, 401]
    assert all(a[1] and a[1].startswith("Bearer") and "actions token" in a[2] for a in answers)
    assert cluster.writes == []
    expected_refusals(page, 401)


def test_the_bearer_token_is_checked_as_bytes_on_every_post(cluster: ClusterFake, store: LocalStore) -> None:
    app = app_over(cluster, store, actions=True, token=ACTIONS_TOKEN)
    cookie, csrf = session_of(app)
    status, _, body = call(app, "GET", "/api/source")
    assert json.loads(body)["actionsToken"] is True
    path = f"/api/runs/{NS}%2Fbusy/cancel"
    base = [(b"cookie", cookie.encode()), (b"x-conveyor-csrf", csrf.encode())]
    for auth in (None, b"Bearer", b"Bearer x", b"bearer " + b"\xff" * 8, b"Token " + ACTIONS_TOKEN.encode()):
        headers = base + ([(b"authorization", auth)] if auth is not None else [])
        status, got, body = call(app, "POST", path, headers)
        assert status == 401 and b"actions token" in body and got[b"www-authenticate"].startswith(b"Bearer"), auth
        assert ACTIONS_TOKEN.encode() not in body
    # the right bearer token is no good without the session's CSRF token: 403 comes first
    status, _, _ = call(app, "POST", path, [(b"authorization", b"Bearer " + ACTIONS_TOKEN.encode())])
    assert status == 403
    assert cluster.writes == []
    status, _, body = call(app, "POST", path, [*base, (b"authorization", b"Bearer " + ACTIONS_TOKEN.encode())])
    assert status == 200 and json.loads(body)["action"] == "cancel"


def test_a_non_ascii_csrf_header_is_a_403_not_an_error(cluster: ClusterFake, store: LocalStore) -> None:
    app = app_over(cluster, store, actions=True)
    cookie, csrf = session_of(app)
    for sent in (b"\xff" * 64, "é".encode() * 32, csrf.encode()[:-1] + b"\xe9"):
        status, _, body = call(
            app, "POST", f"/api/runs/{NS}%2Fbusy/cancel", [(b"cookie", cookie.encode()), (b"x-conveyor-csrf", sent)]
        )
        assert status == 403 and b"CSRF token" in body
    assert cluster.writes == []


class ApiError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(
            f"({status}) Reason: x HTTP response headers: Authorization: Bearer abcdefgh12345678 token=s3cr3t"
        )
        self.status, self.reason = status, "Reason"


class Failing:
    def __init__(self, status: int) -> None:
        self.status = status

    def cancel(self, run_id: str) -> dict[str, Any]:
        raise ApiError(self.status)

    rerun = cancel

    def decide(self, run_id: str, step: str, approve: bool) -> dict[str, Any]:
        raise ApiError(self.status)


@pytest.mark.parametrize(("api", "answered"), [(404, 404), (409, 409), (403, 403), (422, 403), (500, 502)])
def test_the_api_servers_refusal_keeps_404_and_409_and_is_logged_redacted(
    cluster: ClusterFake, store: LocalStore, caplog: pytest.LogCaptureFixture, api: int, answered: int
) -> None:
    source = ClusterSource(cluster, store, (NS,), clock=Clock(), ttl=0.0)  # type: ignore[arg-type]
    app = ConsoleApp(source, None, Failing(api))  # type: ignore[arg-type]
    cookie, csrf = session_of(app)
    with caplog.at_level("WARNING", logger="conveyor.console"):
        status, _, body = call(
            app,
            "POST",
            f"/api/runs/{NS}%2Fbusy/cancel",
            [(b"cookie", cookie.encode()), (b"x-conveyor-csrf", csrf.encode())],
        )
    assert status == answered and f"the cluster refused: {api}".encode() in body
    logged = caplog.text
    assert "console action failed" in logged
    assert "abcdefgh12345678" not in logged and "s3cr3t" not in logged and "s3cr3t" not in body.decode()


def test_a_malformed_content_length_is_a_400(cluster: ClusterFake, store: LocalStore) -> None:
    import socket
    import threading

    sock = bind("127.0.0.1", 0)
    with threaded_server(app_over(cluster, store, True), sock) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            for length in (b"abc", b"-5", b"1_0", b"+3"):
                with socket.create_connection(sock.getsockname()[:2], timeout=10) as conn:
                    conn.sendall(
                        b"POST /api/runs/x/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                        + length
                        + b"\r\n\r\n"
                    )
                    answer = conn.recv(4096)
                assert answer.startswith(b"HTTP/1.1 400"), (length, answer[:80])
        finally:
            server.shutdown()
            thread.join(timeout=10)
    assert cluster.writes == []


# ------------------------------------------------------------------ conveyor ui: what it refuses at start


def ui(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from conveyor.cli.main import main

    code = main(["ui", *argv, "--port", "0"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_actions_off_loopback_need_a_token_file_and_allowed_hosts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "missing-kubeconfig"
    token = tmp_path / "token"
    token.write_text(ACTIONS_TOKEN + "\n")
    code, said = ui(["--kubeconfig", str(kubeconfig), "--actions", "--host", "0.0.0.0", "--allow-host", "c"], capsys)
    assert code == 1 and "needs --actions-token-file" in said
    code, said = ui(
        ["--kubeconfig", str(kubeconfig), "--actions", "--host", "0.0.0.0", "--actions-token-file", str(token)], capsys
    )
    assert code == 1 and "needs --allow-host" in said and "DNS rebinding" in said
    # both given: it goes on to the cluster's credentials (missing here), the token never printed
    argv = ["--kubeconfig", str(kubeconfig), "--actions", "--host", "0.0.0.0", "--allow-host", "c"]
    code, said = ui([*argv, "--actions-token-file", str(token)], capsys)
    assert code == 1 and "kubeconfig" in said and ACTIONS_TOKEN not in said
    for content, why in ((b"", "no token"), (b"short", "too short"), (b"has a space in it, long", "printable ASCII")):
        token.write_bytes(content)
        code, said = ui([*argv, "--actions-token-file", str(token)], capsys)
        assert code == 1 and why in said, said
    code, said = ui([*argv, "--actions-token-file", str(tmp_path / "nope")], capsys)
    assert code == 1 and "cannot read the actions token file" in said
    code, said = ui(["--kubeconfig", str(kubeconfig), "--actions-token-file", str(token)], capsys)
    assert code == 1 and "give it with --actions" in said


def test_no_option_takes_the_token_itself() -> None:
    import argparse

    from conveyor.cli import console_command

    parser = argparse.ArgumentParser()
    console_command.add_commands(parser.add_subparsers())
    (ui_parser,) = [a for a in parser._subparsers._group_actions[0].choices.values()]  # type: ignore[union-attr]
    flags = {f for a in ui_parser._actions for f in a.option_strings}
    assert "--actions-token-file" in flags
    assert not {f for f in flags if "token" in f} - {"--actions-token-file"}


def test_deployment_pages_and_a_run_with_actions_pass_an_accessibility_check(page: Watched) -> None:
    """axe-core (inside axe-playwright-python) on the pages the local-state check cannot reach: no critical violation."""
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    pg = page.page
    for url, ready in (
        ("/deployments", "#deployments tr.deployment"),
        (f"/deployments/{NS}%2Firis", "#deployment-name"),
        (f"/runs/{NS}%2Fgated", '#actions .decision[data-step="second"]'),
    ):
        pg.goto(url)
        expect(pg.locator(ready).first).to_be_visible()
        critical = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in axe.run(pg).response["violations"]
            if v["impact"] == "critical"
        ]
        assert critical == [], f"{url}: {critical}"
