"""The cluster source over a fake API server and a real local store: rows, Run pages, logs, caching.

No network: `FakeReader` answers what kube/reader.py would (Run, Pipeline and pod bodies as the API
server gives them) and counts its calls; the store is a LocalStore in a temporary directory, where
the operator's documents (record, archived logs, fan-out units) are put by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.harness import call
from conveyor.console.app import ConsoleApp
from conveyor.console.cluster import ClusterSource
from conveyor.console.objects import attempts_from_pods, pod_of, split_id
from conveyor.console.source import NotFound
from conveyor.console.views import parse_query, runs_page
from conveyor.core.record import log_document, record_document
from conveyor.kube.reader import ReadRefused
from conveyor.storage.local import LocalStore

T0 = "2026-12-07T10:00:00Z"
SPEC = {
    "steps": [
        {"name": "first", "container": {"image": "x", "command": ["true"]}, "outputs": [{"name": "data"}]},
        {
            "name": "second",
            "container": {"image": "x", "command": ["true"]},
            "inputs": [{"name": "data", "step": "first", "output": "data"}],
        },
        {"name": "third", "container": {"image": "x", "command": ["true"]}, "dependsOn": ["second"]},
    ]
}
DIGEST = "sha256:" + "ab" * 32


def run_body(name: str, ns: str = "team-a", phase: str = "Running", **status: Any) -> dict[str, Any]:
    steps = [
        {
            "name": "first",
            "phase": "Succeeded",
            "attempts": 1,
            "startedAt": T0,
            "finishedAt": "2026-12-07T10:00:05Z",
            "outputs": [{"name": "data", "uri": "s3://b/blobs/ab", "digest": DIGEST, "size": 7}],
        },
        {"name": "second", "phase": "Running", "attempts": 2, "startedAt": "2026-12-07T10:00:06Z"},
        {"name": "third", "phase": "Pending"},
    ]
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Run",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{ns}-{name}",
            "creationTimestamp": T0,
            "labels": {"team": "a"},
        },
        "spec": {"pipelineRef": {"name": "p"}, "parameters": {"rate": 0.5}},
        "status": {
            "phase": phase,
            "pipeline": "p",
            "progress": "1/3",
            "startedAt": T0,
            "steps": steps,
            "conditions": [
                {"type": "Succeeded", "status": "Unknown", "reason": "Running", "lastTransitionTime": T0},
            ],
            **status,
        },
    }


def pod(step: str, attempt: int, phase: str, name: str | None = None, **state: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name or f"{step}-{attempt}",
            "labels": {"conveyor.dev/step": step, "conveyor.dev/attempt": str(attempt), "conveyor.dev/run": "r"},
        },
        "status": {"phase": phase, "startTime": T0, "containerStatuses": [{"name": "step", "state": state}]},
    }


class FakeReader:
    host = "https://api.example:6443"

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.pods: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.logs: dict[str, str] = {}
        self.calls: list[tuple[str, ...]] = []
        self.refuse_logs = False

    def list_custom(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        self.calls.append(("list", plural, str(namespace)))
        assert plural == "runs"
        return [r for r in self.runs if namespace is None or r["metadata"]["namespace"] == namespace]

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", plural, namespace, name))
        if plural == "pipelines":
            return {"metadata": {"name": name}, "spec": SPEC}
        return next(
            (r for r in self.runs if (r["metadata"]["namespace"], r["metadata"]["name"]) == (namespace, name)), None
        )

    def run_pods(self, namespace: str, run: str) -> list[dict[str, Any]]:
        self.calls.append(("pods", namespace, run))
        return self.pods.get((namespace, run), [])

    def pod_log(self, namespace: str, pod: str, container: str, limit_bytes: int) -> str | None:
        self.calls.append(("log", namespace, pod, container))
        if self.refuse_logs:
            raise ReadRefused("the API server refused to read the log: 500 kubelet unreachable")
        return self.logs.get(pod)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def reader() -> FakeReader:
    r = FakeReader()
    r.runs = [run_body("r"), run_body("r", ns="team-b", phase="Succeeded")]
    r.pods[("team-a", "r")] = [
        pod("first", 1, "Succeeded", terminated={"exitCode": 0, "startedAt": T0, "finishedAt": T0}),
        pod("second", 1, "Failed", terminated={"exitCode": 3, "reason": "Error", "message": "{result json}"}),
        pod("second", 2, "Running", running={"startedAt": "2026-12-07T10:00:09Z"}),
    ]
    r.logs = {"second-2": "working\npassword=hunter2\n"}
    return r


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def source(reader: FakeReader, store: LocalStore, clock: Clock, *namespaces: str) -> ClusterSource:
    return ClusterSource(reader, store, namespaces, clock=clock)  # type: ignore[arg-type]


def test_rows_come_from_one_list_kept_for_the_ttl(reader: FakeReader, store: LocalStore, clock: Clock) -> None:
    src = source(reader, store, clock)
    rows = {r.id: r for r in src.rows()}
    assert set(rows) == {"team-a/r", "team-b/r"}
    row = rows["team-a/r"]
    assert (row.pipeline, row.phase, row.progress, row.namespace, dict(row.labels)) == (
        "p",
        "Running",
        "1/3",
        "team-a",
        {"team": "a"},
    )
    src.rows()
    src.run("team-a/r")
    assert [c for c in reader.calls if c[0] == "list"] == [("list", "runs", "None")]
    clock.now += 2.5
    src.rows()
    assert len([c for c in reader.calls if c[0] == "list"]) == 2
    assert "api.example" in src.description and "all namespaces" in src.description


def test_namespaces_given_are_listed_one_by_one_and_others_are_not_found(
    reader: FakeReader, store: LocalStore, clock: Clock
) -> None:
    src = source(reader, store, clock, "team-b")
    assert [r.id for r in src.rows()] == ["team-b/r"]
    assert reader.calls == [("list", "runs", "team-b")]
    for bad in ("team-a/r", "r", "team-b/", "team-b/r/x", "team-b/nope"):
        with pytest.raises(NotFound):
            src.run(bad)
    assert split_id("a/b") == ("a", "b") and split_id("a/b/c") is None


def test_a_running_run_is_shown_from_its_status_with_edges_from_its_pipeline_and_attempts_from_pods(
    reader: FakeReader, store: LocalStore, clock: Clock
) -> None:
    src = source(reader, store, clock)
    view = src.run("team-a/r")
    assert (view["id"], view["phase"], view["live"], view["final"]) == ("team-a/r", "Running", True, False)
    steps = {s["name"]: s for s in view["steps"]}
    assert {n: s["phase"] for n, s in steps.items()} == {"first": "Succeeded", "second": "Running", "third": "Pending"}
    assert steps["first"]["outputs"] == [{"name": "data", "digest": DIGEST, "size": 7, "uri": "s3://b/blobs/ab"}]
    assert steps["second"]["logs"] == [{"key": "second", "attempt": 1}, {"key": "second", "attempt": 2}]
    assert [a["outcome"] for a in steps["second"]["attemptList"]] == ["failed", "running"]
    assert steps["second"]["attemptList"][0]["message"] == "Error (exit code 3)"  # never the termination message
    assert "result json" not in str(view)
    assert (
        'data-id="third"' in view["dag"] and view["dag"].count('class="edge"') == 2
    )  # first→second (input), second→third
    assert view["conditions"] == [{"type": "Succeeded", "status": "Unknown", "reason": "Running", "message": None}]
    assert view["parameters"] == {"rate": 0.5}
    assert [c[:2] for c in reader.calls].count(("get", "pipelines")) == 1


def test_logs_come_from_the_archive_else_from_the_pod_redacted(
    reader: FakeReader, store: LocalStore, clock: Clock
) -> None:
    src = source(reader, store, clock)
    uid = "uid-team-a-r"
    text = src.log("team-a/r", "second", 2)
    assert text is not None and "working" in text and "hunter2" not in text  # from the running pod
    assert src.log("team-a/r", "first", 1) is None  # its pod has no log left and nothing is archived
    store.put_text(log_document(uid, "first", 1), "archived first\n")
    assert src.log("team-a/r", "first", 1) == "archived first\n"
    with pytest.raises(NotFound):
        src.log("team-a/r", "second", 3)
    with pytest.raises(NotFound):
        src.log("team-a/r", "third", 1)
    reader.refuse_logs = True  # a node whose kubelet the API server cannot reach
    clock.now += 5
    assert src.log("team-a/r", "second", 2) is None
    assert src.log("team-a/r", "second", 2) is None


def test_an_ended_run_with_a_stored_record_is_shown_from_it_once(
    reader: FakeReader, store: LocalStore, clock: Clock
) -> None:
    body = reader.runs[1]
    uid = body["metadata"]["uid"]
    record = {
        "kind": "RunRecord",
        "runId": uid,
        "name": "r",
        "namespace": "team-b",
        "pipeline": "p",
        "phase": "Succeeded",
        "startedAt": "2026-12-07T10:00:00+00:00",
        "parameters": {"rate": 0.5},
        "steps": [
            {
                "name": "first",
                "phase": "Succeeded",
                "outputs": [{"name": "data", "uri": "s3://b/blobs/ab", "digest": DIGEST, "size": 7}],
                "logs": [log_document(uid, "first", 1)],
            }
        ],
    }
    src = source(reader, store, clock)
    assert src.run("team-b/r")["live"] is True  # no recordUri yet: the store is not asked
    store.put_document(record_document(uid), record)
    body["status"]["recordUri"] = "s3://b/docs/runs/x/record.json"
    clock.now += 5
    view = src.run("team-b/r")
    assert (view["id"], view["live"], view["final"]) == ("team-b/r", False, True)
    assert src.run("team-b/r") is view
    assert [r["runId"] for r in src.records(["team-b/r"])] == ["team-b/r"]
    with pytest.raises(NotFound, match="no record yet"):
        src.records(["team-a/r"])
    assert src.models() is not None
    assert src.lineage(DIGEST)["digest"] == DIGEST
    assert [p["name"] for p in src.pipelines()["pipelines"]] == ["p"]


def test_the_api_filters_rows_by_namespace_and_label(reader: FakeReader, store: LocalStore, clock: Clock) -> None:
    rows = source(reader, store, clock).rows()
    page = runs_page(rows, parse_query({"namespace": ["team-b"]}))
    assert [r["id"] for r in page["runs"]] == ["team-b/r"] and page["namespaces"] == ["team-a", "team-b"]
    assert runs_page(rows, parse_query({"label": ["team=a"]}))["total"] == 2
    assert runs_page(rows, parse_query({"label": ["team=b"]}))["total"] == 0
    assert runs_page(rows, parse_query({"label": ["team"], "namespace": ["team-a"]}))["total"] == 1
    status, _, body = call(ConsoleApp(source(reader, store, clock)), "GET", "/api/runs/team-a%2Fr")
    assert status == 200 and b'"id":"team-a/r"' in body
    status, _, _ = call(ConsoleApp(source(reader, store, clock)), "GET", "/api/runs/nope")
    assert status == 404


def test_attempts_and_pods_of_fan_out_items() -> None:
    item = pod("fan", 1, "Running", name="fan-item")
    item["metadata"]["labels"]["conveyor.dev/item"] = "2"
    assert attempts_from_pods([item]) == {}  # items' attempts are not steps' attempts
    assert pod_of([item], "fan[2]", 1) == "fan-item"
    assert pod_of([item], "fan[1]", 1) is None and pod_of([item], "fan", 1) is None


def test_a_refusing_api_server_or_store_is_a_503_saying_so(reader: FakeReader, store: LocalStore, clock: Clock) -> None:
    from conveyor.storage.store import StoreUnavailable

    def refuse(plural: str, namespace: str | None) -> list[dict[str, Any]]:
        raise ReadRefused("the API server refused to list runs: 403 Forbidden")

    reader.list_custom = refuse  # type: ignore[method-assign]
    status, _, body = call(ConsoleApp(source(reader, store, clock)), "GET", "/api/runs")
    assert status == 503 and b"403 Forbidden" in body

    class DownStore(LocalStore):
        def get_text(self, name: str) -> str | None:
            raise StoreUnavailable("the store at http://minio:9000 did not answer (password=hunter2)")

    down = DownStore(store.root)
    status, _, body = call(ConsoleApp(source(FakeReader(), down, clock)), "GET", "/api/runs")
    assert status == 200
    ok_reader = FakeReader()
    ok_reader.runs = [run_body("r")]
    status, _, body = call(ConsoleApp(source(ok_reader, down, clock)), "GET", "/api/runs/team-a%2Fr/logs/first/1")
    assert status == 503 and b"did not answer" in body and b"hunter2" not in body
