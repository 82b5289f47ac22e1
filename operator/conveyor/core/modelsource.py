"""Which model a ModelDeployment's source names right now, from Run objects as plain data.

A model is only ever served after its gate blessed it: a Run output that a gate step judged is
served only when that gate blessed it, and "the latest blessed model of Pipeline X" is the candidate
input of the gate step of the newest Succeeded Run of X whose gate blessed it. A Pipeline
without a gate has no blessed model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conveyor.api.modeldeployment import RunOutputSource, ServedModel
from conveyor.api.pipeline import PipelineSpec
from conveyor.core.rollout import version_of

GATE = "gate"
GATE_INPUT = "candidate"


class Unresolved(Exception):
    """The source names no servable model yet; the message says why."""


def _steps(run: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {s.get("name", ""): s for s in (run.get("status") or {}).get("steps", [])}


def _output(step: Mapping[str, Any], output: str) -> ServedModel | None:
    for ref in step.get("outputs", []):
        if ref.get("name") == output and ref.get("uri") and ref.get("digest"):
            return ServedModel(uri=ref["uri"], digest=ref["digest"], version=version_of(ref["digest"]))
    return None


def _gates_of(spec: PipelineSpec, step: str, output: str) -> list[str]:
    """Gate steps whose candidate is this output."""
    return [
        s.name
        for s in spec.steps
        if s.uses == GATE and any(i.name == GATE_INPUT and i.step == step and i.output == output for i in s.inputs)
    ]


def _blessed(step: Mapping[str, Any] | None) -> bool:
    return (
        step is not None
        and step.get("phase") == "Succeeded"
        and float((step.get("metrics") or {}).get("blessed", 0.0)) == 1.0
    )


def run_output(run: Mapping[str, Any], source: RunOutputSource, spec: PipelineSpec | None) -> ServedModel:
    """The model a Run's step wrote; refused when a gate judged it and did not bless it."""
    name = run.get("metadata", {}).get("name", source.name)
    step = _steps(run).get(source.step)
    if step is None or step.get("phase") != "Succeeded":
        raise Unresolved(f"step {source.step!r} of run {name!r} has not succeeded")
    model = _output(step, source.output)
    if model is None:
        raise Unresolved(f"step {source.step!r} of run {name!r} has no output {source.output!r}")
    if spec is not None:
        for gate in _gates_of(spec, source.step, source.output):
            if not _blessed(_steps(run).get(gate)):
                raise Unresolved(f"gate {gate!r} of run {name!r} did not bless this model")
    return model


def latest_blessed(pipeline: str, spec: PipelineSpec, runs: Iterable[Mapping[str, Any]]) -> ServedModel:
    """The model blessed by the newest Succeeded Run of the Pipeline that blessed one."""
    gates = [s for s in spec.steps if s.uses == GATE]
    if not gates:
        raise Unresolved(f"pipeline {pipeline!r} has no gate step, so it never blesses a model")
    finished: Sequence[Mapping[str, Any]] = sorted(
        (r for r in runs if (r.get("status") or {}).get("phase") == "Succeeded"),
        key=lambda r: (r["status"].get("finishedAt") or "", r["metadata"].get("creationTimestamp") or ""),
        reverse=True,
    )
    for run in finished:
        steps = _steps(run)
        for gate in gates:
            model_input = next((i for i in gate.inputs if i.name == GATE_INPUT and i.step), None)
            if model_input is None or not _blessed(steps.get(gate.name)):
                continue
            producer = steps.get(model_input.step or "")
            model = _output(producer, model_input.output or "model") if producer else None
            if model is not None:
                return model
    raise Unresolved(f"no run of pipeline {pipeline!r} has blessed a model yet")
