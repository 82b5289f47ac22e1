"""The Argo CD health checks in deploy/argocd/health/, run as Argo CD runs them: in a Lua 5.1
interpreter (Argo CD's gopher-lua implements 5.1) with only the libraries Argo CD opens for a
custom script (base, table; no string, math or io), the object as the global `obj`, and the
returned table read as {status, message} with the same set of valid statuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

ROOT = Path(__file__).resolve().parents[2]
HEALTH = ROOT / "deploy" / "argocd" / "health" / "conveyor.dev"
CM_PATCH = ROOT / "deploy" / "argocd" / "argocd-cm-patch.yaml"
KINDS = ("Pipeline", "Run", "ModelDeployment")
# gitops-engine's HealthStatusCode values; Argo CD turns anything else into Unknown.
VALID = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
T = "2026-01-01T00:00:00Z"


def to_lua(runtime: Any, value: Any) -> Any:
    """A JSON value as Argo CD hands it to Lua: objects and arrays as tables (arrays 1-based), null as nil."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def argocd_health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Evaluate the kind's health.lua on `obj` in a fresh sandbox, as Argo CD does per evaluation."""
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    # Argo CD opens base, package, table and a reduced os for custom scripts: take the rest away,
    # including the string metatable ("x"):upper() would need.
    runtime.execute(
        'debug.setmetatable("", nil); string = nil; math = nil; io = nil; os = nil; coroutine = nil; '
        "debug = nil; python = nil"
    )
    runtime.globals().obj = to_lua(runtime, json.loads(json.dumps(obj)))
    result = runtime.execute((HEALTH / kind / "health.lua").read_text())
    assert lua51.lua_type(result) == "table", f"{kind} health.lua returned {result!r}, not a table"
    decoded = {k: result[k] for k in result}
    assert set(decoded) <= {"status", "message"}, decoded
    status, message = decoded.get("status"), decoded.get("message")
    assert status in VALID, f"invalid health status {status!r}"
    assert isinstance(message, str) and message, f"{kind} health without a message: {decoded}"
    return str(status), message


def cond(type_: str, status: str, reason: str, message: str = "", generation: int | None = None) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": T,
        "observedGeneration": generation,
    }


def obj(
    kind: str, status: dict[str, Any] | None, generation: int = 1, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ml", "generation": generation},
        "spec": spec or {},
        "status": status,
    }


# ------------------------------------------------------------------ Run

RUN_CASES: list[tuple[str, dict[str, Any] | None, str, str]] = [
    ("no-status", None, "Progressing", "Waiting for the operator"),
    ("empty-status", {}, "Progressing", "Waiting for the operator"),
    (
        "pending-queued",
        {
            "phase": "Pending",
            "conditions": [cond("Succeeded", "Unknown", "WaitingForConcurrencyLimit", "2 Runs of p are running")],
        },
        "Progressing",
        "Run is Pending, WaitingForConcurrencyLimit: 2 Runs of p are running",
    ),
    (
        "running",
        {"phase": "Running", "progress": "2/6", "conditions": [cond("Succeeded", "Unknown", "Running")]},
        "Progressing",
        "Run is Running (2/6 steps)",
    ),
    ("running-without-conditions", {"phase": "Running"}, "Progressing", "Run is Running"),
    (
        "waiting-for-approval",
        {
            "phase": "Running",
            "progress": "5/6",
            "conditions": [cond("Succeeded", "Unknown", "WaitingForApproval", "step 'deploy' needs approval")],
        },
        "Suspended",
        "Run is waiting for approval (5/6 steps): step 'deploy' needs approval",
    ),
    (
        "succeeded",
        {
            "phase": "Succeeded",
            "progress": "6/6",
            "conditions": [cond("Succeeded", "True", "AllStepsSucceeded", "every step succeeded or was skipped")],
        },
        "Healthy",
        "Run succeeded (6/6 steps): every step succeeded or was skipped",
    ),
    ("succeeded-phase-only", {"phase": "Succeeded"}, "Healthy", "Run succeeded"),
    (
        "failed",
        {
            "phase": "Failed",
            "progress": "3/6",
            "conditions": [cond("Succeeded", "False", "StepFailed", "step 'train' failed: OOMKilled")],
        },
        "Degraded",
        "Run failed (3/6 steps): step 'train' failed: OOMKilled",
    ),
    (
        "invalid-spec",
        {"phase": "Failed", "conditions": [cond("Succeeded", "False", "InvalidSpec", "spec.steps[0].image: required")]},
        "Degraded",
        "Run failed: spec.steps[0].image: required",
    ),
    ("failed-phase-only", {"phase": "Failed"}, "Degraded", "Run failed"),
    (
        "cancelled",
        {"phase": "Cancelled", "conditions": [cond("Succeeded", "False", "Cancelled", "the run was cancelled")]},
        "Degraded",
        "Run was cancelled: the run was cancelled",
    ),
]


@pytest.mark.parametrize(("status", "health", "message"), [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_run_health(status: dict[str, Any] | None, health: str, message: str) -> None:
    got, text = argocd_health("Run", obj("Run", status))
    assert got == health, text
    assert text.startswith(message), text


# ------------------------------------------------------------------ Pipeline

SCHEDULE = {"schedule": {"cron": "0 3 * * *"}}
SUSPENDED = {"schedule": {"cron": "0 3 * * *", "suspend": True}}
PIPELINE_CASES: list[tuple[str, dict[str, Any] | None, int, dict[str, Any], str, str]] = [
    ("no-status", None, 1, {}, "Progressing", "Waiting for the operator to validate"),
    ("no-conditions", {"observedGeneration": 1}, 1, {}, "Progressing", "Waiting for the operator to validate"),
    ("valid", {"observedGeneration": 1, "conditions": [cond("Ready", "True", "Valid")]}, 1, {}, "Healthy", ""),
    (
        "valid-scheduled",
        {"observedGeneration": 2, "conditions": [cond("Ready", "True", "Valid", generation=2)]},
        2,
        SCHEDULE,
        "Healthy",
        "Pipeline is valid",
    ),
    (
        "schedule-suspended",
        {"observedGeneration": 1, "conditions": [cond("Ready", "True", "Valid")]},
        1,
        SUSPENDED,
        "Suspended",
        "Pipeline is valid; its schedule is suspended",
    ),
    (
        "invalid",
        {
            "observedGeneration": 1,
            "conditions": [cond("Ready", "False", "InvalidSpec", "spec.steps[1].inputs[0].step: no step 'ingst'")],
        },
        1,
        {},
        "Degraded",
        "Pipeline is not valid (InvalidSpec): spec.steps[1].inputs[0].step: no step 'ingst'",
    ),
    (
        "new-generation-not-yet-seen",
        {"observedGeneration": 1, "conditions": [cond("Ready", "False", "InvalidSpec", "bad")]},
        2,
        {},
        "Progressing",
        "Waiting for the operator to validate",
    ),
    (
        "unknown",
        {"observedGeneration": 1, "conditions": [cond("Ready", "Unknown", "Validating")]},
        1,
        {},
        "Progressing",
        "Waiting",
    ),
]


@pytest.mark.parametrize(
    ("status", "generation", "spec", "health", "message"),
    [c[1:] for c in PIPELINE_CASES],
    ids=[c[0] for c in PIPELINE_CASES],
)
def test_pipeline_health(
    status: dict[str, Any] | None, generation: int, spec: dict[str, Any], health: str, message: str
) -> None:
    got, text = argocd_health("Pipeline", obj("Pipeline", status, generation, spec))
    assert got == health, text
    assert text.startswith(message), text


# ------------------------------------------------------------------ ModelDeployment

DIGEST = "sha256:" + "ab" * 32
MD_CASES: list[tuple[str, dict[str, Any] | None, int, str, str]] = [
    ("no-status", None, 1, "Progressing", "Waiting for the operator"),
    (
        "not-supported-yet",
        {
            "observedGeneration": 1,
            "conditions": [
                cond("Ready", "False", "NotSupportedYet", "serving models is not supported yet by the operator")
            ],
        },
        1,
        "Degraded",
        "Not ready (NotSupportedYet): serving models is not supported yet by the operator",
    ),
    (
        "serving",
        {
            "observedGeneration": 3,
            "modelDigest": "abababababab",
            "readyReplicas": 2,
            "current": {"uri": "s3://b/m.skops", "digest": DIGEST},
            "conditions": [
                cond("Ready", "True", "Serving", "2/2 replicas ready"),
                cond("Progressing", "False", "Done"),
            ],
        },
        3,
        "Healthy",
        "Serving (model abababababab, 2 ready replicas): 2/2 replicas ready",
    ),
    (
        "rolling-out",
        {
            "observedGeneration": 1,
            "conditions": [
                cond("Ready", "False", "RollingOut"),
                cond("Progressing", "True", "CanaryStep", "canary at 20%"),
            ],
        },
        1,
        "Progressing",
        "Rolling out: canary at 20%",
    ),
    (
        "rolled-back",
        {
            "observedGeneration": 1,
            "conditions": [
                cond("Ready", "True", "Serving"),
                cond("Degraded", "True", "RolledBack", "canary error rate 0.12 > 0.01"),
            ],
        },
        1,
        "Degraded",
        "ModelDeployment is degraded: canary error rate 0.12 > 0.01",
    ),
    (
        "stale-generation",
        {"observedGeneration": 1, "conditions": [cond("Ready", "True", "Serving")]},
        2,
        "Progressing",
        "Waiting for the operator",
    ),
    (
        "no-ready-condition",
        {"observedGeneration": 1, "conditions": []},
        1,
        "Progressing",
        "Waiting for the model to be ready",
    ),
]


@pytest.mark.parametrize(
    ("status", "generation", "health", "message"), [c[1:] for c in MD_CASES], ids=[c[0] for c in MD_CASES]
)
def test_model_deployment_health(status: dict[str, Any] | None, generation: int, health: str, message: str) -> None:
    got, text = argocd_health("ModelDeployment", obj("ModelDeployment", status, generation))
    assert got == health, text
    assert text.startswith(message), text


# ------------------------------------------------------------------ the sandbox and the ConfigMap patch


def test_the_sandbox_is_as_bare_as_argocds() -> None:
    """A script that used the string library would fail in Argo CD; the harness must fail it too."""
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    runtime.execute('debug.setmetatable("", nil); string = nil')
    ok, error = runtime.execute('return pcall(function() return ("x"):upper() end)')
    assert not ok and "attempt to index" in error
    for kind in KINDS:
        script = (HEALTH / kind / "health.lua").read_text()
        assert "string." not in script and ":format(" not in script and ":sub(" not in script, kind


def test_argocd_cm_patch_carries_the_same_scripts() -> None:
    doc = yaml.safe_load(CM_PATCH.read_text())
    assert doc["apiVersion"] == "v1" and doc["kind"] == "ConfigMap"
    assert doc["metadata"]["name"] == "argocd-cm"
    assert doc["data"] == {
        f"resource.customizations.health.conveyor.dev_{kind}": (HEALTH / kind / "health.lua").read_text()
        for kind in KINDS
    }
