"""The ModelDeployments pages' documents: which models serve now and before, and how they do (pure, redacted).

From a ModelDeployment body as the API server gives it (the operator's status: current, canary, previous
and rejected models, ready replicas, traffic, conditions, drift, live accuracy per version, retraining)
and the Events posted about it. Only named fields are shown: the spec's server settings say nothing a
person deciding on a model needs, and a model URI with a credential in it is redacted like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conveyor.core.redact import redact

Body = Mapping[str, Any]
RECENT_EVENTS = 20


def deployment_id(body: Body) -> str:
    meta = body["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def _model(m: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not m:
        return None
    return {"uri": m.get("uri"), "digest": m.get("digest"), "version": m.get("version")}


def _ready(status: Mapping[str, Any]) -> str:
    """The Ready condition's status (True, False, Unknown), '' when the operator has not set it yet."""
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return str(ready.get("status") or "") if ready else ""


def _source(spec: Mapping[str, Any]) -> str:
    """Where the spec says the model comes from, in words."""
    model = spec.get("model") or {}
    if model.get("pipeline"):
        p = model["pipeline"]
        return f"pipeline {p.get('name')}" + (" (follows its newest run)" if p.get("follow", True) else "")
    if model.get("run"):
        r = model["run"]
        return f"run {r.get('name')}, step {r.get('step')}, output {r.get('output') or 'model'}"
    return str(model.get("uri") or model.get("digest") or "")


def _rejected(m: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The model the operator refused to serve, and why."""
    if not m:
        return None
    return {**(_model(m) or {}), **{k: m.get(k) for k in ("reason", "message", "at")}}


def deployment_row(body: Body) -> dict[str, Any]:
    """One line of the ModelDeployments list."""
    meta, status = body["metadata"], body.get("status") or {}
    current = _model(status.get("current"))
    canary = status.get("canary") or {}
    return {
        "id": deployment_id(body),
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "ready": _ready(status),
        "readyReplicas": int(status.get("readyReplicas") or 0),
        "current": current,
        "canary": _model(canary.get("model")) if canary else None,
        "driftScore": status.get("driftScore"),
        "retraining": (status.get("retraining") or {}).get("run"),
        "source": _source(body.get("spec") or {}),
    }


def deployments_view(bodies: Iterable[Body]) -> dict[str, Any]:
    rows = sorted((deployment_row(b) for b in bodies), key=lambda r: str(r["id"]))
    return {"deployments": redact(rows), "total": len(rows)}


def event_view(e: Mapping[str, Any]) -> dict[str, Any]:
    """An Event as the page shows it: when (its last time), type, reason, message, how many times."""
    when = (
        e.get("lastTimestamp")
        or e.get("eventTime")
        or e.get("firstTimestamp")
        or e["metadata"].get("creationTimestamp")
    )
    return {
        "at": when,
        "type": e.get("type"),
        "reason": e.get("reason"),
        "message": e.get("message"),
        "count": e.get("count") or 1,
    }


def deployment_view(
    body: Body, events: Sequence[Mapping[str, Any]], run_phase: str | None = None, recent: int = RECENT_EVENTS
) -> dict[str, Any]:
    """One ModelDeployment: its models, replicas, traffic, conditions, drift, live accuracy per version,
    retraining (with the retraining Run's phase when known) and its newest Events first."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    canary = status.get("canary") or None
    drift = status.get("drift") or None
    retraining = status.get("retraining") or None
    monitoring = spec.get("monitoring") or {}
    rollout = spec.get("rollout") or {}
    autoscaling = spec.get("autoscaling") or {}
    shown = sorted((event_view(e) for e in events), key=lambda e: str(e["at"] or ""), reverse=True)[:recent]
    doc: dict[str, Any] = redact(
        {
            **deployment_row(body),
            "generation": body["metadata"].get("generation"),
            "observedGeneration": status.get("observedGeneration"),
            "previous": _model(status.get("previous")),
            "rejected": _rejected(status.get("rejected")),
            "canaryStatus": None
            if canary is None
            else {
                "step": canary.get("step", 0),
                "steps": len(rollout.get("steps") or []),
                "stepStartedAt": canary.get("stepStartedAt"),
                "promoting": bool(canary.get("promoting")),
                "requests": canary.get("requests", 0),
                "errorRate": canary.get("errorRate"),
            },
            "strategy": rollout.get("strategy") or "Rolling",
            "replicas": {"min": autoscaling.get("minReplicas"), "max": autoscaling.get("maxReplicas")},
            "traffic": [{"digest": t.get("digest"), "weight": t.get("weight")} for t in status.get("traffic") or []],
            "conditions": [
                {k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
                for c in status.get("conditions") or []
            ],
            "drift": None
            if drift is None
            else {
                "score": drift.get("score"),
                "threshold": (monitoring.get("drift") or {}).get("threshold"),
                "rows": drift.get("rows", 0),
                "aboveSince": drift.get("aboveSince"),
                "at": drift.get("at"),
                "features": [
                    {k: f.get(k) for k in ("name", "score", "measure", "drifted")} for f in drift.get("features") or []
                ],
            },
            "minAccuracy": monitoring.get("minAccuracy"),
            "liveAccuracy": [
                {k: a.get(k) for k in ("version", "labels", "accuracy", "meanAbsoluteError")}
                for a in status.get("liveAccuracy") or []
            ],
            "retrainingStatus": None
            if retraining is None
            else {**{k: retraining.get(k) for k in ("run", "reason", "message", "at")}, "runPhase": run_phase},
            "retrainPipeline": (monitoring.get("retrain") or {}).get("pipeline"),
            "events": shown,
        }
    )
    return doc
