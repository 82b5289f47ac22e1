"""The Pipelines pages' documents: which pipelines the runs ran, their specs and their recent runs (pure).

Locally there are no Pipeline objects, only what each run ran: its record names the pipeline and the
digest of the resolved spec, and the store keeps that spec by digest (lifecycle/specs.py). A pipeline
is then every spec digest its runs ran, each with its parameters and steps when the spec is stored.
Only named fields of a spec are shown, never a container's command, arguments or environment (which
may hold a credential), and a parameter whose name looks secret has its default redacted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.api.pipeline import PipelineSpec, Step
from conveyor.console.views import RunRow
from conveyor.core.redact import REDACTED, redact, secret_name

RECENT_RUNS = 20


def _newest_first(rows: Sequence[RunRow]) -> list[RunRow]:
    return sorted(rows, key=lambda r: (-(r.started.timestamp() if r.started else 0.0), r.id))


def pipelines_view(rows: Sequence[RunRow], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One line per pipeline: how many runs (by phase), the newest one, and how many spec versions ran."""
    digests: dict[str, set[str]] = {}
    for r in records:
        if r.get("pipelineSpecDigest"):
            digests.setdefault(str(r.get("pipeline") or ""), set()).add(str(r["pipelineSpecDigest"]))
    by_name: dict[str, list[RunRow]] = {}
    for row in rows:
        if row.pipeline:
            by_name.setdefault(row.pipeline, []).append(row)
    out = []
    for name, runs in by_name.items():
        newest = _newest_first(runs)[0]
        phases: dict[str, int] = {}
        for run in runs:
            phases[run.phase] = phases.get(run.phase, 0) + 1
        out.append(
            {
                "name": name,
                "runs": len(runs),
                "phases": dict(sorted(phases.items())),
                "versions": len(digests.get(name, ())),
                "lastRun": {"id": newest.id, "phase": newest.phase, "startedAt": _iso(newest)},
            }
        )
    out.sort(key=lambda p: str(p["name"]))
    return {"pipelines": redact(out), "total": len(out)}


def _iso(row: RunRow) -> str | None:
    return row.started.isoformat() if row.started else None


def _parameter(p: Any) -> dict[str, Any]:
    default = REDACTED if secret_name(p.name) and isinstance(p.default, str) else p.default
    return {"name": p.name, "type": p.type.value, "default": default, "description": p.description}


def _step(s: Step) -> dict[str, Any]:
    fan = s.for_each
    return {
        "name": s.name,
        "what": f"component {s.uses}" if s.uses else f"image {s.container.image}" if s.container else "",
        "inputs": [
            {"name": i.name, "from": f"{i.step}.{i.output}" if i.step else i.uri, "digest": i.digest} for i in s.inputs
        ],
        "outputs": [o.name for o in s.outputs],
        "dependsOn": list(s.depends_on),
        "when": s.when,
        "forEach": None
        if fan is None
        else (
            f"{len(fan.items)} items"
            if fan.items is not None
            else f"parameter {fan.parameter}"
            if fan.parameter
            else f"grid over {', '.join(fan.grid or {})}"
        ),
        "retries": s.retries.limit,
        "cache": s.cache.enabled,
        "approval": s.approval is not None and s.approval.required,
    }


def spec_view(spec: PipelineSpec) -> dict[str, Any]:
    """What a spec says, without any container's command, arguments, environment or pod settings."""
    schedule = spec.schedule
    doc: dict[str, Any] = redact(
        {
            "description": spec.description,
            "parameters": [_parameter(p) for p in spec.parameters],
            "steps": [_step(s) for s in spec.steps],
            "schedule": None
            if schedule is None
            else {
                "cron": schedule.cron,
                "timeZone": schedule.time_zone,
                "concurrencyPolicy": schedule.concurrency_policy.value,
                "suspend": schedule.suspend,
            },
            "triggers": [
                {
                    "kind": "s3" if t.s3 is not None else "drift",
                    "what": t.s3.uri if t.s3 is not None else t.drift.model_deployment if t.drift is not None else "",
                    "parameters": dict(t.parameters),
                }
                for t in spec.triggers
            ],
        }
    )
    return doc


def pipeline_view(
    name: str,
    rows: Sequence[RunRow],
    records: Sequence[Mapping[str, Any]],
    specs: Mapping[str, PipelineSpec | None],
    recent: int = RECENT_RUNS,
) -> dict[str, Any]:
    """One pipeline: each spec version its runs ran (newest first; the stored spec, or None when the store
    has none for that digest), and its newest runs with their phases, spec digests and parameters.
    LookupError when no run ran a pipeline of that name."""
    runs = _newest_first([r for r in rows if r.pipeline == name])
    if not runs:
        raise LookupError(f"no run in this state ran a pipeline named {name!r}")
    by_id = {str(r["runId"]): r for r in records if r.get("pipeline") == name}
    versions: dict[str, dict[str, Any]] = {}
    for row in reversed(runs):  # oldest first, so each version's first and last runs come out right
        digest = by_id.get(row.id, {}).get("pipelineSpecDigest")
        if not digest:
            continue
        v = versions.setdefault(str(digest), {"digest": digest, "runs": 0, "firstRun": row.id})
        v["runs"] += 1
        v["lastRun"], v["lastStartedAt"] = row.id, _iso(row)
    shown = []
    for v in sorted(versions.values(), key=lambda v: str(v["lastStartedAt"] or ""), reverse=True):
        spec = specs.get(str(v["digest"]))
        shown.append({**v, "stored": spec is not None, "spec": spec_view(spec) if spec is not None else None})
    doc: dict[str, Any] = redact(
        {
            "name": name,
            "versions": shown,
            "total": len(runs),
            "runs": [
                {
                    **row.to_json(),
                    "pipelineSpecDigest": by_id.get(row.id, {}).get("pipelineSpecDigest"),
                    "parameters": dict(by_id.get(row.id, {}).get("parameters") or {}),
                }
                for row in runs[:recent]
            ],
        }
    )
    return doc
