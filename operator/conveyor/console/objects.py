"""Run objects and their step pods turned into what the console's views take (pure).

The cluster source reads the API server and the store; this module decides what the bodies mean: a
runs-list row from a Run's metadata and status, a record-shaped document of a Run that has no record
yet (from its status, the way the operator writes the record: `StepStatus.to_wire` per step and the
archived logs' names from `core.record.log_documents`), every attempt of a step from its pods, and
which pod holds one attempt's log. A Run is named `namespace/name` in the console.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from conveyor.api.pipeline import PipelineSpec
from conveyor.api.run import RunStatus
from conveyor.console.views import RunRow
from conveyor.core.planner import StepState, units_of
from conveyor.core.record import log_documents
from conveyor.core.status import item_statuses, states_from_status
from conveyor.kube.timestamps import parse_timestamp
from conveyor.manifests.names import LABEL_ATTEMPT, LABEL_ITEM, LABEL_STEP, label_value

Body = Mapping[str, Any]


def console_id(body: Body) -> str:
    meta = body["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def split_id(run_id: str) -> tuple[str, str] | None:
    """(namespace, name) of a console run id, or None when it is not one."""
    namespace, sep, name = run_id.partition("/")
    return (namespace, name) if sep and namespace and name and "/" not in name else None


def pipeline_of(body: Body) -> str:
    status, spec = body.get("status") or {}, body.get("spec") or {}
    return str(status.get("pipeline") or (spec.get("pipelineRef") or {}).get("name") or "")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def run_row_of(body: Body) -> RunRow:
    """One runs-list line: the Run's phase, pipeline, namespace, labels, start (its creation until it starts)."""
    meta, status = body["metadata"], body.get("status") or {}
    started = parse_timestamp(status.get("startedAt")) or parse_timestamp(meta.get("creationTimestamp"))
    return RunRow(
        id=console_id(body),
        pipeline=pipeline_of(body),
        phase=str(status.get("phase") or "Pending"),
        started=started,
        seconds=_seconds(started, parse_timestamp(status.get("finishedAt"))),
        progress=str(status.get("progress") or ""),
        namespace=str(meta.get("namespace") or ""),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
    )


def conditions_of(body: Body) -> list[dict[str, Any]]:
    """The Run's conditions: type, status, reason, message (times left out)."""
    out = []
    for c in (body.get("status") or {}).get("conditions") or []:
        out.append({k: c.get(k) for k in ("type", "status", "reason", "message")})
    return out


def _outcome(conditions: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(reason, message) of the Run's outcome: its Succeeded condition's, else a False condition's."""
    chosen = next((c for c in conditions if c.get("type") == "Succeeded"), None)
    if chosen is None or (chosen.get("status") == "Unknown" and not chosen.get("message")):
        chosen = next((c for c in conditions if c.get("status") == "False"), chosen)
    return (str(chosen.get("reason") or ""), str(chosen.get("message") or "")) if chosen else ("", "")


def status_states(body: Body, units: Mapping[str, StepState]) -> dict[str, StepState]:
    """The planner's states of a Run: its status's steps and the fan-out items the store keeps."""
    status = RunStatus.model_validate(body.get("status") or {})
    return {**states_from_status(status.steps), **units}


def log_names(body: Body, units: Mapping[str, StepState]) -> list[str]:
    """The store documents of every attempt's log the status knows of, steps in order, attempts in order."""
    uid = str(body["metadata"]["uid"])
    status = RunStatus.model_validate(body.get("status") or {})
    states = status_states(body, units)
    return [name for s in status.steps for name in log_documents(uid, states, s.name)]


def live_record(body: Body, units: Mapping[str, StepState]) -> dict[str, Any]:
    """A record-shaped document of a Run from its status (no record yet): each step as the record has it,
    without inputs (the DAG's edges then come from the spec), its fan-outs' items from `units`."""
    meta = body["metadata"]
    uid = str(meta["uid"])
    status = RunStatus.model_validate(body.get("status") or {})
    states = status_states(body, units)
    steps = []
    for s in status.steps:
        entry = s.to_wire()
        entry["logs"] = log_documents(uid, states, s.name)
        if s.fan_out is not None:
            entry["itemCount"] = s.fan_out.total
        steps.append(entry)
    conditions = conditions_of(body)
    reason, message = _outcome(conditions)
    started = status.started_at or parse_timestamp(meta.get("creationTimestamp"))
    record: dict[str, Any] = {
        "runId": console_id(body),
        "name": str(meta["name"]),
        "namespace": str(meta["namespace"]),
        "pipeline": pipeline_of(body),
        "phase": status.phase.value,
        "reason": reason,
        "message": message,
        "startedAt": started.isoformat() if started else None,
        "finishedAt": status.finished_at.isoformat() if status.finished_at else None,
        "seconds": _seconds(started, status.finished_at),
        "parameters": dict(status.parameters or (body.get("spec") or {}).get("parameters") or {}),
        "steps": steps,
    }
    items = {s.name: item_statuses(states, s.name) for s in status.steps if units_of(states, s.name)}
    if items:
        record["items"] = items
    return record


def edges_of(spec: PipelineSpec, with_inputs: bool) -> dict[str, list[str]]:
    """Each step's upstream steps: its `dependsOn`, and the steps it reads from when `with_inputs` (a record
    names those in its steps' inputs; a Run's status does not)."""
    out: dict[str, list[str]] = {}
    for s in spec.all_steps():
        ups = list(s.depends_on)
        if with_inputs:
            ups += [i.step for i in s.inputs if i.step is not None and i.step not in ups]
        out[s.name] = ups
    return out


def _labels(pod: Body) -> Mapping[str, str]:
    labels: Mapping[str, str] = (pod.get("metadata") or {}).get("labels") or {}
    return labels


def _container(pod: Body) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((c for c in statuses if c.get("name") == "step"), statuses[0] if statuses else {})


def attempts_from_pods(pods: Iterable[Body]) -> dict[str, list[dict[str, Any]]]:
    """Every attempt of each step (not of fan-out items) whose pod still exists: start, end, outcome, and for
    a failed one the container's reason and exit code (never its termination message: the step's result)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        labels = _labels(pod)
        step, attempt = labels.get(LABEL_STEP), labels.get(LABEL_ATTEMPT)
        if step is None or attempt is None or not attempt.isdigit() or LABEL_ITEM in labels:
            continue
        status = pod.get("status") or {}
        state = _container(pod).get("state") or {}
        ended = state.get("terminated") or {}
        running = state.get("running") or {}
        phase = status.get("phase")
        outcome = "succeeded" if phase == "Succeeded" else "failed" if phase == "Failed" else "running"
        message = None
        if outcome == "failed":
            message = f"{ended.get('reason') or status.get('reason') or 'Failed'}"
            if ended.get("exitCode") is not None:
                message += f" (exit code {ended['exitCode']})"
        out.setdefault(step, []).append(
            {
                "attempt": int(attempt),
                "startedAt": ended.get("startedAt") or running.get("startedAt") or status.get("startTime"),
                "finishedAt": ended.get("finishedAt"),
                "outcome": outcome,
                "message": message,
            }
        )
    return {k: sorted(v, key=lambda a: int(a["attempt"])) for k, v in out.items()}


def pod_of(pods: Iterable[Body], key: str, attempt: int) -> str | None:
    """The name of the pod that ran one attempt (`key`: a step, or `step[i]` for a fan-out item)."""
    step, bracket, rest = key.partition("[")
    item = rest.rstrip("]") if bracket else None
    for pod in pods:
        labels = _labels(pod)
        if (
            labels.get(LABEL_STEP) == label_value(step)
            and labels.get(LABEL_ATTEMPT) == str(attempt)
            and labels.get(LABEL_ITEM) == item
        ):
            return str(pod["metadata"]["name"])
    return None
