"""Resource steps on plain data: what an object means (core.resources), the retry that follows, validation, the
planner's rendered manifest, the object the operator builds, and the local runner's refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from conveyor.api.pipeline import PipelineSpec, ResourceSpec, Step
from conveyor.api.run import RunPhase, StepPhase
from conveyor.controller.config import ConfigError, load_config
from conveyor.core.planner import Kill, Launch, RunContext, RunPlanner, StepState, finished, killed
from conveyor.core.resources import MANAGED_GROUPS, field_value, kind_refusal, parse_field_path, resource_outcome
from conveyor.core.support import LOCAL, OPERATOR, unsupported
from conveyor.core.task import StoreConfig, TaskResult
from conveyor.core.validation import InvalidSpec, parse_document, validate_pipeline
from conveyor.kube.cluster import ClusterRefused
from conveyor.kube.objects import DeleteFailed, ObjectKind, StepObjects
from conveyor.manifests.resource import object_name, step_object

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MANIFEST = {"apiVersion": "example.dev/v1", "kind": "Job", "spec": {"size": "{{ params.size }}"}}


def resource(**extra: Any) -> ResourceSpec:
    return ResourceSpec.model_validate({"manifest": MANIFEST, **extra})


BY_CEL = resource(
    successWhen={"expression": "self.status.state == 'Done'"},
    failureWhen={"expression": "self.status.state == 'Error'"},
    metrics=[{"name": "loss", "fieldPath": "status.results.loss"}],
)
BY_CONDITION = resource(successWhen={"condition": "Complete"}, failureWhen={"condition": "Failed"})
NO_FAILURE_CHECK = resource(successWhen={"condition": "Complete"})


def obj(status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "example.dev/v1", "kind": "Job", "metadata": {"name": "o"}}
    if status is not None:
        body["status"] = status
    return body


def cond(type_: str, status: str = "True", **more: str) -> dict[str, Any]:
    return {"conditions": [{"type": type_, "status": status, **more}]}


OUTCOMES: list[tuple[str, ResourceSpec, dict[str, Any] | None, TaskResult | None]] = [
    # (case, spec, object now, attempt result: None while it runs)
    ("no status yet: running (a missing field is not met)", BY_CEL, obj(), None),
    ("engine still working", BY_CEL, obj({"state": "Running"}), None),
    (
        "succeeded: metrics read",
        BY_CEL,
        obj({"state": "Done", "results": {"loss": 0.25}}),
        TaskResult(ok=True, metrics={"loss": 0.25}),
    ),
    (
        "a metric given as a numeric string is read",
        BY_CEL,
        obj({"state": "Done", "results": {"loss": "0.5"}}),
        TaskResult(ok=True, metrics={"loss": 0.5}),
    ),
    (
        "succeeded without the declared metric: the attempt failed, naming it",
        BY_CEL,
        obj({"state": "Done", "results": {}}),
        TaskResult(
            ok=False,
            message="Job o succeeded but metric 'loss' (status.results.loss): status.results has no field 'loss'",
        ),
    ),
    (
        "a non-numeric metric fails",
        BY_CEL,
        obj({"state": "Done", "results": {"loss": "low"}}),
        TaskResult(ok=False, message="Job o succeeded but metric 'loss' (status.results.loss) is 'low', not a number"),
    ),
    (
        "failed, with the engine's own message",
        BY_CEL,
        obj({"state": "Error", "message": "worker OOMKilled"}),
        TaskResult(ok=False, message="Job o failed (self.status.state == 'Error'): worker OOMKilled"),
    ),
    ("condition not there yet", BY_CONDITION, obj({"conditions": []}), None),
    ("condition False is not met", BY_CONDITION, obj(cond("Complete", "False")), None),
    ("condition True: succeeded", BY_CONDITION, obj(cond("Complete")), TaskResult(ok=True)),
    (
        "failure condition: its reason and message",
        BY_CONDITION,
        obj(cond("Failed", reason="BackoffLimitExceeded", message="3 pods failed")),
        TaskResult(ok=False, message="Job o failed (condition Failed is True): BackoffLimitExceeded: 3 pods failed"),
    ),
    (
        "both met: failure wins",
        BY_CONDITION,
        obj({"conditions": [{"type": "Complete", "status": "True"}, {"type": "Failed", "status": "True"}]}),
        TaskResult(ok=False, message="Job o failed (condition Failed is True)"),
    ),
    (
        "no failureWhen: a failed-looking object still runs (the timeout ends it)",
        NO_FAILURE_CHECK,
        obj(cond("Failed")),
        None,
    ),
    ("deleted by someone: the attempt failed", BY_CEL, None, TaskResult(ok=False, message="object Job o disappeared")),
    (
        "an expression that yields no boolean fails the attempt",
        resource(successWhen={"expression": "self.status.state"}),
        obj({"state": "Done"}),
        TaskResult(ok=False, message="Job o: 'self.status.state' evaluated to 'Done', not a boolean"),
    ),
]


@pytest.mark.parametrize(("spec", "body", "expected"), [c[1:] for c in OUTCOMES], ids=[c[0] for c in OUTCOMES])
def test_what_the_object_means(spec: ResourceSpec, body: dict[str, Any] | None, expected: TaskResult | None) -> None:
    assert resource_outcome(spec, body, "Job o") == expected


def _step(retries: int) -> Step:
    return Step.model_validate(
        {
            "name": "r",
            "resource": BY_CONDITION.to_wire(),
            "retries": {"limit": retries, "backoff": {"initialSeconds": 4}},
            "timeoutSeconds": 30,
        }
    )


RETRIES = [
    # (case, retries, attempts made, object, phase after, next attempt in seconds)
    ("failed with a retry left: waits its backoff", 1, 1, obj(cond("Failed")), StepPhase.WAITING, 4.0),
    ("failed on its last attempt", 1, 2, obj(cond("Failed")), StepPhase.FAILED, None),
    ("object gone, a retry left", 1, 1, None, StepPhase.WAITING, 4.0),
    ("succeeded on the retry", 1, 2, obj(cond("Complete")), StepPhase.SUCCEEDED, None),
]


@pytest.mark.parametrize(
    ("retries", "attempts", "body", "phase", "delay"), [r[1:] for r in RETRIES], ids=[r[0] for r in RETRIES]
)
def test_an_ended_attempt_retries_as_a_jobs_does(
    retries: int, attempts: int, body: dict[str, Any] | None, phase: StepPhase, delay: float | None
) -> None:
    step = _step(retries)
    assert step.resource is not None
    result = resource_outcome(step.resource, body, "Job o")
    assert result is not None
    state = StepState(phase=StepPhase.RUNNING, attempts=attempts, started_at=NOW - timedelta(seconds=5))
    after = finished(state, step, result, NOW)
    assert after.phase is phase
    assert after.next_attempt_at == (NOW + timedelta(seconds=delay) if delay is not None else None)


def test_a_timed_out_attempt_is_killed_and_retried() -> None:
    step = _step(1)
    state = StepState(phase=StepPhase.RUNNING, attempts=1, started_at=NOW - timedelta(seconds=31))
    plan = _planner(PipelineSpec(steps=[step])).plan({"r": state}, NOW, cache={})
    kill = next(a for a in plan.actions if isinstance(a, Kill))
    assert killed(state, step, kill, NOW).phase is StepPhase.WAITING


PATHS = [
    ("status.results.loss", ("status", "results", "loss")),
    (".status.trials[1].score", ("status", "trials", 1, "score")),
    ("{.status.x}", ("status", "x")),
    ("status['a.b']", ("status", "a.b")),
]


@pytest.mark.parametrize(("path", "parts"), PATHS, ids=[p[0] for p in PATHS])
def test_field_paths(path: str, parts: tuple[str | int, ...]) -> None:
    assert parse_field_path(path) == parts


def test_field_value_follows_lists_and_names_what_is_missing() -> None:
    body = {"status": {"trials": [{"score": 1}, {"score": 2}]}}
    assert field_value(body, "status.trials[1].score") == 2
    with pytest.raises(LookupError, match=r"status.trials has no item \[5\]"):
        field_value(body, "status.trials[5].score")


# ------------------------------------------------------------------ validation


def pipeline(step: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {"parameters": [{"name": "size", "default": "2"}], "steps": [{"name": "r", **step}], **spec},
    }


def res(**over: Any) -> dict[str, Any]:
    return {"resource": {"manifest": MANIFEST, "successWhen": {"condition": "Complete"}, **over}}


INVALID = [
    # (case, step, path, fragment)
    (
        "no kind",
        res(manifest={"apiVersion": "x/v1"}),
        "spec.steps[0].resource.manifest.kind",
        "kind is required",
    ),
    (
        "no apiVersion",
        res(manifest={"kind": "K"}),
        "spec.steps[0].resource.manifest.apiVersion",
        "apiVersion is required",
    ),
    (
        "templated kind",
        res(manifest={"apiVersion": "x/v1", "kind": "{{ params.size }}"}),
        "spec.steps[0].resource.manifest.kind",
        "cannot hold a template",
    ),
    (
        "a name of its own",
        res(manifest={**MANIFEST, "metadata": {"name": "mine"}}),
        "spec.steps[0].resource.manifest.metadata.name",
        "set by the operator",
    ),
    (
        "bad CEL in successWhen",
        res(successWhen={"expression": "self.status.("}),
        "spec.steps[0].resource.successWhen.expression",
        "invalid expression",
    ),
    (
        "bad CEL in failureWhen",
        res(failureWhen={"expression": "self.status ==="}),
        "spec.steps[0].resource.failureWhen.expression",
        "invalid expression",
    ),
    (
        "CEL reading something other than the object",
        res(successWhen={"expression": "params.size == '2'"}),
        "spec.steps[0].resource.successWhen.expression",
        "unknown variable 'params'",
    ),
    (
        "both expression and condition",
        res(successWhen={"expression": "true", "condition": "Complete"}),
        "spec.steps[0].resource.successWhen",
        "exactly one of expression or condition",
    ),
    (
        "a field path that cannot be read",
        res(metrics=[{"name": "loss", "fieldPath": "status..loss"}]),
        "spec.steps[0].resource.metrics[0].fieldPath",
        "cannot read field path",
    ),
    (
        "an unknown template value in the manifest",
        res(manifest={**MANIFEST, "spec": {"size": "{{ params.nope }}"}}),
        "spec.steps[0].resource.manifest.spec.size",
        "unknown template variable 'params.nope'",
    ),
    (
        "artifact outputs",
        {**res(), "outputs": [{"name": "model"}]},
        "spec.steps[0].outputs",
        "is a resource step: it takes no artifact outputs",
    ),
    (
        "pod resources",
        {**res(), "resources": {"cpu": "1"}},
        "spec.steps[0].resources",
        "is a resource step",
    ),
    (
        "fan-out not yet",
        {**res(), "forEach": {"items": [1, 2]}},
        "spec.steps[0].forEach",
        "not supported yet on a resource step",
    ),
    *(
        (
            f"the operator's own group: {api_version} {kind}",
            res(manifest={"apiVersion": api_version, "kind": kind}),
            "spec.steps[0].resource.manifest.apiVersion",
            "whose kinds the operator manages itself",
        )
        for api_version, kind in [
            ("v1", "Service"),
            ("apps/v1", "Deployment"),
            ("batch/v1", "Job"),
            ("policy/v1", "PodDisruptionBudget"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            ("conveyor.dev/v1alpha1", "Run"),
            ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ]
    ),
    *(
        (
            f"metadata.{key}",
            res(manifest={**MANIFEST, "metadata": {key: value}}),
            f"spec.steps[0].resource.manifest.metadata.{key}",
            "is set by the operator",
        )
        for key, value in [
            ("finalizers", ["example.dev/keep"]),
            ("uid", "0000"),
            ("resourceVersion", "1"),
            ("managedFields", []),
        ]
    ),
    (
        "a status in the manifest",
        res(manifest={**MANIFEST, "status": {"state": "Done"}}),
        "spec.steps[0].resource.manifest.status",
        "status is written by the engine",
    ),
    (
        "a container too",
        {**res(), "container": {"image": "i", "command": ["x"]}},
        "spec.steps[0]",
        "exactly one of uses, container or resource",
    ),
]


@pytest.mark.parametrize(("step", "path", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_resource_steps_are_named_by_path(step: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_document(pipeline(step), "pipeline.yaml")
    matching = [i for i in raised.value.issues if i.path == path]
    assert matching, f"no issue at {path}; got {raised.value.issues}"
    assert any(fragment in i.message for i in matching), f"{fragment!r} not in {matching}"


def test_a_valid_resource_step_passes_and_only_the_local_runner_refuses_it() -> None:
    doc = pipeline(res(failureWhen={"expression": "has(self.status) && self.status.state == 'Error'"}))
    spec = PipelineSpec.model_validate(doc["spec"])
    assert validate_pipeline(spec) == []
    assert unsupported(spec, OPERATOR) == []
    (issue,) = unsupported(spec, LOCAL)
    assert issue.path == "spec.steps[0].resource"
    assert "step 'r' is a resource step" in issue.message and "cannot create cluster objects" in issue.message


# ------------------------------------------------------------------ planning and the object


def _planner(spec: PipelineSpec) -> RunPlanner:
    ctx = RunContext(
        run_id="uid-1", name="run-1", namespace="ns", code_version="test", store=StoreConfig(kind="local", root="/s")
    )
    return RunPlanner(spec, {"size": "3"}, ctx)


def test_the_planner_launches_the_rendered_manifest() -> None:
    manifest = {**MANIFEST, "spec": {"size": "{{ params.size }}", "owner": "{{ run.name }}"}}
    spec = PipelineSpec.model_validate(pipeline(res(manifest=manifest))["spec"])
    plan = _planner(spec).plan({}, NOW, cache={})
    (launch,) = plan.actions
    assert isinstance(launch, Launch) and plan.phase is RunPhase.RUNNING
    assert launch.task.resource == {
        "apiVersion": "example.dev/v1",
        "kind": "Job",
        "spec": {"size": "3", "owner": "run-1"},
    }
    assert launch.task.command == [] and launch.task.component is None


def test_the_object_is_named_per_attempt_labelled_and_owned_by_the_run() -> None:
    manifest = {**MANIFEST, "metadata": {"labels": {"team": "ml"}, "annotations": {"a": "b"}}}
    spec = PipelineSpec.model_validate(pipeline(res(manifest=manifest))["spec"])
    launch = _planner(spec).plan({}, NOW, cache={}).actions[0]
    assert isinstance(launch, Launch)
    body = step_object(run_name="run-1", run_uid="uid-1", namespace="ns", task=launch.task)
    meta = body["metadata"]
    assert meta["name"] == object_name("run-1", "r", 1) != object_name("run-1", "r", 2)
    assert meta["namespace"] == "ns"
    assert meta["labels"] == {
        "team": "ml",
        "conveyor.dev/run": "run-1",
        "conveyor.dev/step": "r",
        "conveyor.dev/attempt": "1",
        "app.kubernetes.io/managed-by": "conveyor",
    }
    assert meta["annotations"] == {"a": "b"}
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("Run", "run-1", "uid-1", True)
    assert launch.task.resource is not None and "name" not in launch.task.resource.get("metadata", {})


ALLOWED = ["ray.io/rayjobs", "example.dev/jobs"]
KINDS = [
    # (case, apiVersion, kind, plural, allowed, refusal fragment or None)
    ("allowed", "ray.io/v1", "RayJob", "rayjobs", ALLOWED, None),
    ("another allowed", "example.dev/v1beta1", "Job", "jobs", ALLOWED, None),
    (
        "not listed",
        "sparkoperator.k8s.io/v1beta2",
        "SparkApplication",
        "sparkapplications",
        ALLOWED,
        "sparkoperator.k8s.io/sparkapplications",
    ),
    ("same group, other resource", "ray.io/v1", "RayCluster", "rayclusters", ALLOWED, "ray.io/rayclusters"),
    ("same resource, other group", "other.dev/v1", "Job", "jobs", ALLOWED, "other.dev/jobs"),
    ("nothing allowed", "ray.io/v1", "RayJob", "rayjobs", [], "resourceSteps.allowed"),
    (
        "a subgroup of a managed group is not managed",
        "testing.conveyor.dev/v1",
        "Engine",
        "engines",
        ["testing.conveyor.dev/engines"],
        None,
    ),
    ("core, even if listed", "v1", "Service", "services", ["/services"], "'core'"),
    ("apps, even if listed", "apps/v1", "Deployment", "deployments", ["apps/deployments"], "operator manages"),
    ("conveyor.dev, even if listed", "conveyor.dev/v1alpha1", "Run", "runs", ["conveyor.dev/runs"], "operator manages"),
]


@pytest.mark.parametrize(
    ("api_version", "kind", "plural", "allowed", "fragment"), [c[1:] for c in KINDS], ids=[c[0] for c in KINDS]
)
def test_only_allowed_kinds_outside_the_operators_groups_are_created(
    api_version: str, kind: str, plural: str, allowed: list[str], fragment: str | None
) -> None:
    why = kind_refusal(api_version, kind, plural, allowed)
    if fragment is None:
        assert why is None
    else:
        assert why is not None and fragment in why and kind in why, why
        if not any(api_version.startswith(g + "/") or (g == "" and "/" not in api_version) for g in MANAGED_GROUPS):
            assert "resourceSteps.allowed" in why, why  # names the chart value to set


def test_the_allowed_kinds_setting() -> None:
    assert load_config({}).resource_kinds == []
    assert load_config({"CONVEYOR_RESOURCE_KINDS": ""}).resource_kinds == []
    env = {"CONVEYOR_RESOURCE_KINDS": "ray.io/rayjobs, example.dev/jobs"}
    assert load_config(env).resource_kinds == ["ray.io/rayjobs", "example.dev/jobs"]
    assert load_config({"CONVEYOR_RESOURCE_KINDS": '["ray.io/rayjobs"]'}).resource_kinds == ["ray.io/rayjobs"]
    for bad in ("rayjobs", "ray.io/", "ray.io/v1/rayjobs", "*/rayjobs"):
        with pytest.raises(ConfigError, match="CONVEYOR_RESOURCE_KINDS"):
            load_config({"CONVEYOR_RESOURCE_KINDS": bad})


class _Objects(StepObjects):
    """StepObjects whose API answers with `status` (200: deleted) and whose kind is known."""

    def __init__(self, status: int) -> None:
        super().__init__(api=None)  # type: ignore[arg-type]
        self.status = status
        self.calls: list[tuple[str, str]] = []

    def kind_of(self, api_version: str, kind: str) -> ObjectKind:
        return ObjectKind(api_version, kind, "jobs")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path))
        if self.status != 200:
            raise ApiException(status=self.status, reason="Nope")
        return None


@pytest.mark.parametrize(
    ("status", "raises"),
    [(200, None), (404, None), (403, ClusterRefused), (422, ClusterRefused), (500, DeleteFailed)],
    ids=["deleted", "already-gone", "no-grant", "refused", "server-error"],
)
def test_a_refused_delete_is_a_cluster_refusal_as_create_and_get_are(status: int, raises: type | None) -> None:
    objects = _Objects(status)
    if raises is None:
        objects.delete("example.dev/v1", "Job", "ns", "r-train-1")
    else:
        with pytest.raises(raises) as e:
            objects.delete("example.dev/v1", "Job", "ns", "r-train-1")
        if raises is ClusterRefused:
            assert "deleting Job r-train-1 was refused" in str(e.value) and str(status) in str(e.value)
        if raises is DeleteFailed:
            assert "deleting Job r-train-1 failed" in str(e.value) and str(status) in str(e.value)
    assert objects.calls == [("DELETE", "/apis/example.dev/v1/namespaces/ns/jobs/r-train-1")]
