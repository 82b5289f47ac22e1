"""The run record: one immutable JSON document per Run, the same from both shells.

Pure: (pipeline, parameters, step states, ...) → dict. The local runner and the operator write it
into the artifact store under `record_document(run_id)` when a Run reaches a final phase; the CLI
(`conveyor lineage`, `compare`, `logs`) reads it. Step inputs are derived again from the upstream
steps' recorded outputs, exactly as the planner resolved them, so the record needs no extra memory.
Nothing secret is recorded: parameters and digests, never environment values or credentials.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from conveyor.api.pipeline import PipelineSpec, Step
from conveyor.api.run import RunPhase
from conveyor.core.planner import StepState, step_order, units_of
from conveyor.core.status import item_statuses, step_statuses
from conveyor.core.templates import TemplateError, references, strings_in

RECORD_KIND = "RunRecord"
RECORD_API_VERSION = "conveyor.dev/v1alpha1"
LOG_LIMIT_BYTES = 1024 * 1024
"""A step attempt's archived log keeps at most its last MiB."""

_WHEN_PARAM = re.compile(r"\bparams\.([A-Za-z_][A-Za-z0-9_]*)")


def record_document(run_id: str) -> str:
    """Where a Run's record lives in the store."""
    return f"runs/{run_id}/record.json"


def log_document(run_id: str, key: str, attempt: int) -> str:
    """Where the archived log of one attempt lives (`key` is the step, or `step[i]` for a fan-out item)."""
    return f"runs/{run_id}/logs/{key}-{attempt}.log"


def spec_digest(spec: PipelineSpec) -> str:
    """sha256 of the resolved pipeline spec in canonical JSON (what ran, whatever file or object it came from).

    Keys are sorted, except a `forEach.grid`'s: their order is the order of the grid's items (the first key
    varies slowest), so two grids that differ only in it are different specs."""
    wire = spec.to_wire()
    for step in [*wire.get("steps", []), *wire.get("onExit", [])]:
        grid = (step.get("forEach") or {}).get("grid")
        if grid is not None:
            step["forEach"]["grid"] = [[k, v] for k, v in grid.items()]
    canonical = json.dumps(wire, sort_keys=True, separators=(",", ":"), default=str).encode()
    return f"sha256:{hashlib.sha256(canonical).hexdigest()}"


def parameters_used(step: Step) -> list[str]:
    """The parameters a step reads: in its templates, its `when` condition, its forEach parameter."""
    texts: list[str] = []
    if step.with_ is not None:
        texts += [s for _, s in strings_in(step.with_, "with")]
    if step.container is not None:
        texts += [*step.container.command, *step.container.args, *(e.value for e in step.container.env)]
    names: set[str] = set()
    for text in texts:
        names.update(_template_params(text))
    if step.when:
        names.update(_WHEN_PARAM.findall(step.when))
    if step.for_each is not None and step.for_each.parameter:
        names.add(step.for_each.parameter)
    return sorted(names)


def _template_params(text: str) -> Iterator[str]:
    try:
        for ref in references(text):
            if len(ref.parts) >= 2 and ref.parts[0] == "params":
                yield ref.parts[1]
    except TemplateError:
        return  # validation rejects malformed templates before a Run starts


def step_inputs(
    step: Step, states: Mapping[str, StepState], external_digests: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Each input with its content digest and where it came from (an upstream step's output, or a URI)."""
    out: list[dict[str, Any]] = []
    for i in step.inputs:
        if i.step is not None:
            ref = states[i.step].outputs.get(i.output or "") if i.step in states else None
            out.append({"name": i.name, "step": i.step, "output": i.output, "digest": ref.digest if ref else None})
        else:
            assert i.uri is not None
            out.append({"name": i.name, "uri": i.uri, "digest": i.digest or external_digests.get(i.uri)})
    return out


def _seconds(state: StepState) -> float | None:
    if state.started_at is None or state.finished_at is None:
        return None
    return round((state.finished_at - state.started_at).total_seconds(), 3)


def log_documents(run_id: str, states: Mapping[str, StepState], name: str) -> list[str]:
    """Every attempt's archived log of a step (or of each of its items, in item order)."""
    keyed = units_of(states, name) or [(name, states.get(name, StepState()))]
    return [log_document(run_id, key, n) for key, s in keyed for n in range(1, s.attempts + 1)]


def run_record(
    *,
    run_id: str,
    run_name: str,
    namespace: str,
    pipeline: str,
    spec: PipelineSpec,
    parameters: Mapping[str, Any],
    code_version: str,
    states: Mapping[str, StepState],
    phase: RunPhase,
    reason: str = "",
    message: str = "",
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    external_digests: Mapping[str, str] | None = None,
    step_image: str | None = None,
    environment: Mapping[str, Any] | None = None,
    exit_steps: tuple[str, str] | None = None,
    pipeline_generation: int | None = None,
) -> dict[str, Any]:
    """The record of a Run: what ran (spec digest, parameters, code version, images), on what data (every step's
    input digests and their producers), what came out (outputs with digests and URIs, metrics), and how
    (cache keys and hits, attempts, timings). `states` holds the steps and, for fan-outs, their items.
    `pipeline_generation` is the Pipeline object's metadata.generation on a cluster (None for an inline spec and
    locally, where there is no object): with the spec digest, the version of the pipeline that ran."""
    external = external_digests or {}
    steps = {s.name: s for s in spec.all_steps()}
    order = step_order(spec)
    records = []
    for status in step_statuses(order, states):
        step, state = steps[status.name], states.get(status.name, StepState())
        entry = status.to_wire()
        entry.update(
            {
                "inputs": step_inputs(step, states, external),
                "parameters": {p: parameters[p] for p in parameters_used(step) if p in parameters},
                "image": step.container.image if step.container is not None else step_image,
                "component": step.uses,
                "seconds": _seconds(state),
                "logs": log_documents(run_id, states, status.name),
            }
        )
        if step.for_each is not None:
            entry["itemCount"] = len(units_of(states, status.name))
        records.append(entry)
    seconds = (finished_at - started_at).total_seconds() if started_at and finished_at else None
    record: dict[str, Any] = {
        "apiVersion": RECORD_API_VERSION,
        "kind": RECORD_KIND,
        "runId": run_id,
        "name": run_name,
        "namespace": namespace,
        "pipeline": pipeline,
        "pipelineSpecDigest": spec_digest(spec),
        "pipelineGeneration": pipeline_generation,
        "codeVersion": code_version,
        "phase": phase.value,
        "reason": reason,
        "message": message,
        "startedAt": started_at.isoformat() if started_at else None,
        "finishedAt": finished_at.isoformat() if finished_at else None,
        "seconds": round(seconds, 3) if seconds is not None else None,
        "parameters": dict(parameters),
        "externalInputs": dict(external),
        "steps": records,
    }
    items = {name: item_statuses(states, name) for name in order if units_of(states, name)}
    if items:
        record["items"] = items  # the members of each fan-in collection, in item order
    if environment is not None:
        record["environment"] = dict(environment)
    if exit_steps is not None:  # how the onExit steps ended (reason, message): the Run's phase does not say
        record["exitSteps"] = {"reason": exit_steps[0], "message": exit_steps[1]}
    return record
