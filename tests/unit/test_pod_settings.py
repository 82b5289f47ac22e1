"""Pod settings: how the pipeline's defaults and a step's own merge, the Job they produce, what validation refuses
(by field path), what the local runner rejects, and the condition a pod that cannot start puts on its Run."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.api.base import Condition, ConditionStatus
from conveyor.api.pipeline import Resources
from conveyor.api.pod import PodSettings, merge_pod_settings
from conveyor.core.podstart import POD_CONDITION, WaitingPod, pods_started_condition
from conveyor.core.support import LOCAL, OPERATOR, unsupported
from conveyor.core.task import StoreConfig, TaskSpec
from conveyor.core.validation import InvalidSpec, parse_document
from conveyor.kube.cluster import pod_started, pod_waiting
from conveyor.manifests.job import step_job

Doc = dict[str, Any]
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def pipeline(pod: Doc | None = None, step_pod: Doc | None = None) -> Doc:
    step: Doc = {"name": "train", "container": {"image": "trainer:1", "command": ["python", "train.py"]}}
    if step_pod is not None:
        step["pod"] = step_pod
    spec: Doc = {"steps": [step]}
    if pod is not None:
        spec["pod"] = pod
    return {"apiVersion": "conveyor.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "p"}, "spec": spec}


def pod_template(pod: Doc | None = None, step_pod: Doc | None = None, **job_args: Any) -> Doc:
    spec = parse_document(pipeline(pod, step_pod)).spec
    task = TaskSpec(run_id="u1", step="train", attempt=1, store=StoreConfig(kind="s3", bucket="b"), cache_key="k")
    job = step_job(
        run_name="r1",
        run_uid="u1",
        namespace="ns",
        task=task,
        image="trainer:1",
        command=["python", "-m", "conveyor.runtime"],
        credentials_secret="conveyor-artifacts",
        pod=merge_pod_settings(spec.pod, spec.steps[0].pod),  # type: ignore[union-attr]
        **job_args,
    )
    template: Doc = job["spec"]["template"]
    return template


DB_PASSWORD = {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
SETTINGS = {"name": "settings", "configMap": {"name": "train-settings"}}
SETTINGS_MOUNT = {"name": "settings", "mountPath": "/etc/train"}
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
ZONE_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
        }
    }
}


def container(t: Doc) -> Doc:
    c: Doc = t["spec"]["containers"][0]
    return c


MANIFEST_CASES: list[tuple[str, Doc | None, Doc | None, Callable[[Doc], Any], Any]] = [
    (
        "nothing-set: only the runtime's own volume",
        None,
        None,
        lambda t: t["spec"]["volumes"],
        [{"name": "scratch", "emptyDir": {}}],
    ),
    (
        "env from a Secret key, after the runtime's",
        {"env": [DB_PASSWORD]},
        None,
        lambda t: container(t)["env"][-1],
        DB_PASSWORD,
    ),
    (
        "a literal env value",
        {"env": [{"name": "MODE", "value": "fast"}]},
        None,
        lambda t: container(t)["env"][-1],
        {"name": "MODE", "value": "fast"},
    ),
    (
        "envFrom a ConfigMap with a prefix",
        None,
        {"envFrom": [{"prefix": "APP_", "configMapRef": {"name": "cfg"}}]},
        lambda t: container(t)["envFrom"],
        [{"prefix": "APP_", "configMapRef": {"name": "cfg"}}],
    ),
    (
        "a ConfigMap volume and its mount",
        {"volumes": [SETTINGS], "volumeMounts": [SETTINGS_MOUNT]},
        None,
        lambda t: (t["spec"]["volumes"][1:], container(t)["volumeMounts"]),
        ([SETTINGS], [{"name": "scratch", "mountPath": "/tmp"}, SETTINGS_MOUNT]),
    ),
    (
        "a claim, a Secret with items and a sized emptyDir",
        None,
        {
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
                {"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "token", "path": "token"}]}},
                {"name": "work", "emptyDir": {"sizeLimit": "10Gi"}},
            ],
            "volumeMounts": [
                {"name": "data", "mountPath": "/data", "readOnly": True},
                {"name": "creds", "mountPath": "/var/run/creds"},
                {"name": "work", "mountPath": "/work"},
            ],
        },
        lambda t: t["spec"]["volumes"][1:],
        [
            {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
            {"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "token", "path": "token"}]}},
            {"name": "work", "emptyDir": {"sizeLimit": "10Gi"}},
        ],
    ),
    (
        "placement",
        {"nodeSelector": {"pool": "gpu"}, "tolerations": [GPU_TAINT], "affinity": ZONE_AFFINITY},
        None,
        lambda t: (t["spec"]["nodeSelector"], t["spec"]["tolerations"], t["spec"]["affinity"]),
        ({"pool": "gpu"}, [GPU_TAINT], ZONE_AFFINITY),
    ),
    (
        "identity and priority",
        {"imagePullSecrets": [{"name": "regcred"}], "serviceAccountName": "trainer", "priorityClassName": "batch-high"},
        None,
        lambda t: (
            t["spec"]["imagePullSecrets"],
            t["spec"]["serviceAccountName"],
            t["spec"]["priorityClassName"],
            t["spec"]["automountServiceAccountToken"],
        ),
        ([{"name": "regcred"}], "trainer", "batch-high", False),
    ),
    (
        "pod labels beside the operator's, and annotations",
        {"labels": {"team": "ml"}},
        {"annotations": {"example.com/owner": "ana"}},
        lambda t: (
            t["metadata"]["labels"]["team"],
            t["metadata"]["labels"]["conveyor.dev/step"],
            t["metadata"]["annotations"],
        ),
        ("ml", "train", {"example.com/owner": "ana"}),
    ),
    (
        "the security defaults stay whatever is set",
        {"volumes": [SETTINGS], "volumeMounts": [SETTINGS_MOUNT], "serviceAccountName": "trainer"},
        None,
        lambda t: (
            t["spec"]["securityContext"]["runAsNonRoot"],
            container(t)["securityContext"]["readOnlyRootFilesystem"],
            container(t)["securityContext"]["allowPrivilegeEscalation"],
        ),
        (True, True, False),
    ),
]


@pytest.mark.parametrize(
    ("pod", "step_pod", "part", "expected"), [c[1:] for c in MANIFEST_CASES], ids=[c[0] for c in MANIFEST_CASES]
)
def test_the_step_job_carries_the_pod_settings(
    pod: Doc | None, step_pod: Doc | None, part: Callable[[Doc], Any], expected: Any
) -> None:
    assert part(pod_template(pod, step_pod)) == expected


def test_a_gpu_request_and_the_operator_service_account_as_fallback() -> None:
    t = pod_template(resources=Resources(gpu=2), service_account="conveyor-steps")
    assert container(t)["resources"] == {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}
    assert t["spec"]["serviceAccountName"] == "conveyor-steps"
    assert (
        pod_template({"serviceAccountName": "mine"}, service_account="conveyor-steps")["spec"]["serviceAccountName"]
        == "mine"
    )


def test_a_step_merges_over_the_pipeline_defaults() -> None:
    defaults = PodSettings.model_validate(
        {
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}],
            "envFrom": [{"secretRef": {"name": "shared"}}],
            "volumes": [SETTINGS, {"name": "work", "emptyDir": {}}],
            "volumeMounts": [SETTINGS_MOUNT],
            "nodeSelector": {"pool": "cpu", "zone": "a"},
            "tolerations": [GPU_TAINT],
            "affinity": ZONE_AFFINITY,
            "imagePullSecrets": [{"name": "regcred"}],
            "serviceAccountName": "pipeline-sa",
            "priorityClassName": "low",
            "labels": {"team": "ml", "tier": "batch"},
        }
    )
    own = PodSettings.model_validate(
        {
            "env": [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
            "envFrom": [{"secretRef": {"name": "shared"}}, {"configMapRef": {"name": "mine"}}],
            "volumes": [{"name": "work", "emptyDir": {"sizeLimit": "1Gi"}}],
            "volumeMounts": [{"name": "work", "mountPath": "/etc/train"}],
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [GPU_TAINT, {"key": "spot", "operator": "Exists"}],
            "priorityClassName": "high",
            "labels": {"tier": "urgent"},
        }
    )
    merged = merge_pod_settings(defaults, own).to_wire()
    assert [(e["name"], e["value"]) for e in merged["env"]] == [("A", "1"), ("B", "2"), ("C", "3")]
    assert merged["envFrom"] == [
        {"secretRef": {"name": "shared", "optional": False}},
        {"configMapRef": {"name": "mine", "optional": False}},
    ]
    assert [(v["name"], v.get("emptyDir")) for v in merged["volumes"]] == [
        ("settings", None),
        ("work", {"medium": "", "sizeLimit": "1Gi"}),
    ]
    assert [(m["name"], m["mountPath"]) for m in merged["volumeMounts"]] == [("work", "/etc/train")]  # same path
    assert merged["nodeSelector"] == {"pool": "gpu", "zone": "a"}
    assert [t.get("key") for t in merged["tolerations"]] == ["nvidia.com/gpu", "spot"]  # added, not repeated
    assert merged["affinity"] == merge_pod_settings(defaults, None).to_wire()["affinity"]  # kept when not given
    assert (merged["serviceAccountName"], merged["priorityClassName"]) == ("pipeline-sa", "high")
    assert merged["labels"] == {"team": "ml", "tier": "urgent"}
    assert merge_pod_settings(None, None) == PodSettings()


INVALID_CASES: list[tuple[str, Doc | None, Doc | None, str, str]] = [
    (
        "mount of an undeclared volume",
        None,
        {"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        "spec.steps[0].pod.volumeMounts[0].name",
        "mounts volume 'data', which is not declared",
    ),
    (
        "a default mount of a volume only a step declares",
        {"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        {"volumes": [{"name": "data", "emptyDir": {}}]},
        "spec.pod.volumeMounts[0].name",
        "not declared in spec.pod.volumes",
    ),
    (
        "reserved label prefix",
        {"labels": {"conveyor.dev/step": "x"}},
        None,
        "spec.pod.labels['conveyor.dev/step']",
        "the operator sets the conveyor.dev/ labels",
    ),
    (
        "reserved managed-by label",
        None,
        {"labels": {"app.kubernetes.io/managed-by": "me"}},
        "spec.steps[0].pod.labels['app.kubernetes.io/managed-by']",
        "the operator sets it on every step pod",
    ),
    (
        "reserved annotation prefix",
        None,
        {"annotations": {"conveyor.dev/x": "y"}},
        "spec.steps[0].pod.annotations['conveyor.dev/x']",
        "reserved",
    ),
    (
        "a mount over the step's /tmp",
        {"volumes": [SETTINGS], "volumeMounts": [{"name": "settings", "mountPath": "/tmp"}]},
        None,
        "spec.pod.volumeMounts[0].mountPath",
        "the step's scratch directory",
    ),
    (
        "a mount under /tmp",
        None,
        {"volumes": [SETTINGS], "volumeMounts": [{"name": "settings", "mountPath": "/tmp/in"}]},
        "spec.steps[0].pod.volumeMounts[0].mountPath",
        "at or under /tmp",
    ),
    (
        "a mount hiding the runtime",
        None,
        {"volumes": [SETTINGS], "volumeMounts": [{"name": "settings", "mountPath": "/opt"}]},
        "spec.steps[0].pod.volumeMounts[0].mountPath",
        "would hide /opt/conveyor",
    ),
    (
        "a mount over the termination message",
        None,
        {"volumes": [SETTINGS], "volumeMounts": [{"name": "settings", "mountPath": "/dev/termination-log"}]},
        "spec.steps[0].pod.volumeMounts[0].mountPath",
        "a path the step runtime needs",
    ),
    (
        "a mount over a system directory",
        None,
        {"volumes": [SETTINGS], "volumeMounts": [{"name": "settings", "mountPath": "/etc"}]},
        "spec.steps[0].pod.volumeMounts[0].mountPath",
        "system directory /etc",
    ),
    (
        "a mount over /",
        None,
        {"volumes": [SETTINGS], "volumeMounts": [{"name": "settings", "mountPath": "/"}]},
        "spec.steps[0].pod.volumeMounts[0].mountPath",
        "cannot mount over /",
    ),
    (
        "a relative mount path",
        None,
        {"volumes": [SETTINGS], "volumeMounts": [{"name": "settings", "mountPath": "data"}]},
        "spec.steps[0].pod.volumeMounts[0].mountPath",
        "should match pattern",
    ),
    ("duplicate volume names", {"volumes": [SETTINGS, SETTINGS]}, None, "spec.pod.volumes[1].name", "duplicate volume"),
    (
        "the runtime's volume name",
        {"volumes": [{"name": "scratch", "emptyDir": {}}]},
        None,
        "spec.pod.volumes[0].name",
        "'scratch' is reserved",
    ),
    (
        "duplicate env names",
        None,
        {"env": [DB_PASSWORD, DB_PASSWORD]},
        "spec.steps[0].pod.env[1].name",
        "duplicate variable 'DB_PASSWORD'",
    ),
    (
        "duplicate mount paths",
        {"volumes": [SETTINGS], "volumeMounts": [SETTINGS_MOUNT, {**SETTINGS_MOUNT, "name": "settings"}]},
        None,
        "spec.pod.volumeMounts[1].mountPath",
        "duplicate mountPath",
    ),
    (
        "duplicate imagePullSecrets",
        {"imagePullSecrets": [{"name": "r"}, {"name": "r"}]},
        None,
        "spec.pod.imagePullSecrets[1].name",
        "duplicate imagePullSecret",
    ),
    (
        "a variable the runtime sets",
        {"env": [{"name": "CONVEYOR_TASK", "value": "x"}]},
        None,
        "spec.pod.env[0].name",
        "reserved: the step runtime sets it",
    ),
    (
        "store credentials",
        None,
        {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]},
        "spec.steps[0].pod.env[0].name",
        "reserved",
    ),
    (
        "value and valueFrom",
        {"env": [{**DB_PASSWORD, "value": "x"}]},
        None,
        "spec.pod.env[0]",
        "value and valueFrom are exclusive",
    ),
    (
        "valueFrom with both refs",
        {
            "env": [
                {
                    "name": "X",
                    "valueFrom": {
                        "secretKeyRef": {"name": "a", "key": "k"},
                        "configMapKeyRef": {"name": "a", "key": "k"},
                    },
                }
            ]
        },
        None,
        "spec.pod.env[0].valueFrom",
        "exactly one of secretKeyRef or configMapKeyRef",
    ),
    (
        "envFrom without a source",
        {"envFrom": [{"prefix": "X_"}]},
        None,
        "spec.pod.envFrom[0]",
        "exactly one of secretRef or configMapRef",
    ),
    (
        "a volume with two sources",
        {"volumes": [{**SETTINGS, "emptyDir": {}}]},
        None,
        "spec.pod.volumes[0]",
        "exactly one of persistentVolumeClaim, configMap, secret or emptyDir",
    ),
    (
        "a hostPath volume",
        None,
        {"volumes": [{"name": "h", "hostPath": {"path": "/var/lib"}}]},
        "spec.steps[0].pod.volumes[0]",
        "hostPath volumes are not allowed: step pods run under the restricted PodSecurity",
    ),
    (
        "a securityContext",
        {"securityContext": {"runAsUser": 0}},
        None,
        "spec.pod",
        "securityContext is not allowed: step pods run under the restricted PodSecurity profile",
    ),
    ("host networking", None, {"hostNetwork": True}, "spec.steps[0].pod", "hostNetwork is not allowed"),
    ("privileged", None, {"privileged": True}, "spec.steps[0].pod", "privileged is not allowed"),
    (
        "an emptyDir size that is no quantity",
        {"volumes": [{"name": "w", "emptyDir": {"sizeLimit": "lots"}}]},
        None,
        "spec.pod.volumes[0].emptyDir.sizeLimit",
        "should match pattern",
    ),
    ("an invalid label value", {"labels": {"team": "has space"}}, None, "spec.pod.labels.team", "should match pattern"),
    (
        "a toleration value with Exists",
        {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
        None,
        "spec.pod.tolerations[0].value",
        "takes no value",
    ),
    (
        "tolerationSeconds without NoExecute",
        {"tolerations": [{"key": "k", "tolerationSeconds": 5}]},
        None,
        "spec.pod.tolerations[0].tolerationSeconds",
        "only applies to effect NoExecute",
    ),
    ("an unknown pod field", {"nodeName": "n1"}, None, "spec.pod.nodeName", "unknown field"),
]


@pytest.mark.parametrize(
    ("pod", "step_pod", "path", "message"), [c[1:] for c in INVALID_CASES], ids=[c[0] for c in INVALID_CASES]
)
def test_invalid_pod_settings_are_named_by_field_path(
    pod: Doc | None, step_pod: Doc | None, path: str, message: str
) -> None:
    with pytest.raises(InvalidSpec) as e:
        parse_document(pipeline(pod, step_pod))
    found = [i for i in e.value.issues if i.path == path]
    assert found, str(e.value)
    assert message in found[0].message, str(e.value)


def test_a_mount_may_use_the_pipeline_volumes_and_nested_system_paths() -> None:
    doc = pipeline(
        {"volumes": [SETTINGS]},
        {
            "volumeMounts": [
                {"name": "settings", "mountPath": "/etc/train"},
                {"name": "settings", "mountPath": "/var/run/x"},
            ]
        },
    )
    assert parse_document(doc).spec.steps[0].pod is not None  # type: ignore[union-attr]


FIELDS = {
    "env": [{"name": "A", "value": "1"}],
    "envFrom": [{"secretRef": {"name": "s"}}],
    "volumes": [{"name": "w", "emptyDir": {}}],
    "volumeMounts": [{"name": "w", "mountPath": "/work"}],
    "nodeSelector": {"pool": "gpu"},
    "tolerations": [GPU_TAINT],
    "affinity": ZONE_AFFINITY,
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccountName": "trainer",
    "priorityClassName": "high",
    "labels": {"team": "ml"},
    "annotations": {"a": "b"},
}


def test_every_pod_setting_is_covered_here() -> None:
    assert set(FIELDS) == {f.alias for f in PodSettings.model_fields.values()}


@pytest.mark.parametrize("level", ["pipeline", "step"])
def test_the_local_runner_takes_pod_env(level: str) -> None:
    """Literal values, and valueFrom from `conveyor run --env-file` (tests/unit/test_envfile.py)."""
    settings = {"env": copy.deepcopy(FIELDS["env"])}
    spec = parse_document(pipeline(settings, None) if level == "pipeline" else pipeline(None, settings)).spec
    assert unsupported(spec, LOCAL) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("field", sorted(set(FIELDS) - {"env"}))
@pytest.mark.parametrize("level", ["pipeline", "step"])
def test_the_local_runner_rejects_each_pod_setting_by_name(field: str, level: str) -> None:
    settings = {field: copy.deepcopy(FIELDS[field])}
    if field == "volumeMounts":
        settings["volumes"] = copy.deepcopy(FIELDS["volumes"])
    doc = pipeline(settings, None) if level == "pipeline" else pipeline(None, settings)
    spec = parse_document(doc).spec
    issues = unsupported(spec, LOCAL)  # type: ignore[arg-type]
    where = "spec.pod" if level == "pipeline" else "spec.steps[0].pod"
    assert f"{where}.{field}" in [i.path for i in issues]
    assert all("not supported yet by the local runner" in i.message for i in issues)
    assert unsupported(spec, OPERATOR) == []  # type: ignore[arg-type]  # the operator carries all of them


MISSING_SECRET = 'CreateContainerConfigError: secret "db" not found'


@pytest.mark.parametrize(
    ("waiting", "previous", "expected"),
    [
        ([], None, None),  # nothing waits, nothing ever did: no condition at all
        (
            [WaitingPod("train", "r1-train-abc-1", MISSING_SECRET, 1800)],
            None,
            (
                "False",
                "CreateContainerConfigError",
                "step 'train' (Job r1-train-abc-1) cannot start: CreateContainerConfigError: secret \"db\" not found; "
                "the attempt fails if not started 1800s after launch",
            ),
        ),
        (
            [
                WaitingPod("score[1]", "j2", "Unschedulable: 0/1 nodes are available", 0),
                WaitingPod("fetch", "j1", 'CreateContainerConfigError: configmap "cfg" not found', 0),
            ],
            None,
            (
                "False",
                "CreateContainerConfigError",
                "step 'fetch' (Job j1) cannot start: CreateContainerConfigError: configmap \"cfg\" not found; "
                "step 'score[1]' (Job j2) cannot start: Unschedulable: 0/1 nodes are available",
            ),
        ),
        (
            [WaitingPod("a", "j", "waiting for something", 0)],
            None,
            ("False", "PodNotStarted", "step 'a' (Job j) cannot start: waiting for something"),
        ),
        ([], "False", ("True", "NoneWaiting", "no step pod is waiting to start")),  # the Secret appeared
    ],
)
def test_a_pod_that_cannot_start_shows_on_the_run(
    waiting: list[WaitingPod], previous: str | None, expected: tuple[str, str, str] | None
) -> None:
    before = (
        Condition(type=POD_CONDITION, status=ConditionStatus(previous), reason="X", last_transition_time=NOW)
        if previous
        else None
    )
    got = pods_started_condition(waiting, before, NOW, 3)
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert (got.status.value, got.reason, got.message) == expected
    assert got.observed_generation == 3


def _pod(phase: str, state: Doc, restarts: int = 0, last: Doc | None = None) -> Doc:
    return {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"job-name": "j"}},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "step", "state": state, "restartCount": restarts, "lastState": last or {}}],
        },
    }


KUBELET_MISSING = {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "db" not found'}}


@pytest.mark.parametrize(
    ("the_pod", "started", "waiting"),
    [
        # What a kubelet reports for a missing Secret: Pending, the container waiting.
        (_pod("Pending", KUBELET_MISSING), False, 'CreateContainerConfigError: secret "db" not found'),
        # A node that says Running with the container never started (every other state null) has not started either.
        (
            _pod("Running", {**KUBELET_MISSING, "running": None, "terminated": None}),
            False,
            'CreateContainerConfigError: secret "db" not found',
        ),
        # A container that ran and now waits to restart has started.
        (_pod("Running", {"waiting": {"reason": "CrashLoopBackOff"}}, restarts=1), True, None),
        (
            _pod("Running", {"waiting": {"reason": "CrashLoopBackOff"}}, last={"terminated": {"exitCode": 1}}),
            True,
            None,
        ),
        (_pod("Running", {"running": {"startedAt": "2026-12-07T10:00:00Z"}, "waiting": None}), True, None),
        ({"metadata": {"name": "p"}, "status": {"phase": "Running"}}, True, None),  # no container statuses yet
    ],
)
def test_the_start_observation_trusts_the_container_state(the_pod: Doc, started: bool, waiting: str | None) -> None:
    assert pod_started(the_pod) is started
    if not started:
        assert pod_waiting(the_pod) == waiting
