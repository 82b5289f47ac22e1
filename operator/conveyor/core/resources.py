"""Resource steps, decided purely: what a step's object says (still running, succeeded, failed), the numbers it
reports, and which problems of a `resource:` spec are refused before any Run starts.

The engine that serves the object's kind (KubeRay, the Spark operator, ...) does the work and writes the object's
status; the operator only reads it. Both successWhen and failureWhen are read from the object as it is now, every
pass: level-triggered, like a Job's conditions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import Any

from conveyor.api.pipeline import ResourceCheck, ResourceSpec
from conveyor.core.task import TaskResult

RESERVED_METADATA = (
    "name",
    "generateName",
    "namespace",
    "ownerReferences",
    "finalizers",
    "uid",
    "resourceVersion",
    "managedFields",
)
"""What the operator (or the API server) sets on every step object: a manifest setting it is refused."""

MANAGED_GROUPS = (
    "",
    "apps",
    "batch",
    "policy",
    "autoscaling",
    "rbac.authorization.k8s.io",
    "conveyor.dev",
    "monitoring.coreos.com",
)
"""API groups the operator itself is granted kinds in ("" is the core group): a resource step can never create
an object of these, whatever the chart allows, or a Pipeline author could have the operator create, say, a
privileged Deployment with its own grants."""

ALLOWED_VALUE = "resourceSteps.allowed"
"""The chart value that lists the kinds resource steps may create (CONVEYOR_RESOURCE_KINDS)."""


def api_group(api_version: str) -> str:
    """The API group of an apiVersion: `ray.io/v1` → `ray.io`, `v1` → "" (core)."""
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def managed_group_problem(api_version: str, kind: str) -> str | None:
    """Why a manifest's kind is refused outright (its group is one the operator manages), or None."""
    group = api_group(api_version)
    if group not in MANAGED_GROUPS:
        return None
    return (
        f"{kind} ({api_version}) is in the API group {group or 'core'!r}, whose kinds the operator manages itself: "
        "a resource step cannot create it"
    )


def kind_refusal(api_version: str, kind: str, resource: str, allowed: Collection[str]) -> str | None:
    """Why the operator must not create an object of `kind` (served as `resource`, its plural) for a resource step,
    or None. `allowed`: the GROUP/RESOURCE pairs of CONVEYOR_RESOURCE_KINDS (the core group as "/RESOURCE")."""
    if (managed := managed_group_problem(api_version, kind)) is not None:
        return managed
    group = api_group(api_version)
    if f"{group}/{resource}" in allowed:
        return None
    return (
        f"resource steps may not create {kind} ({group}/{resource}): add {{apiGroups: [{group}], "
        f"resources: [{resource}]}} to the chart value {ALLOWED_VALUE}"
    )


_SEGMENT = re.compile(r"\.?([A-Za-z_$][-A-Za-z0-9_$]*)|\[\s*(\d+)\s*\]|\[\s*['\"]([^'\"]+)['\"]\s*\]")


def parse_field_path(path: str) -> tuple[str | int, ...]:
    """`status.trials[0].score`, `.status.x`, `{.status.x}` or `status['a.b']` → the keys and indices to follow.
    Raises ValueError naming what it could not read."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    parts: list[str | int] = []
    at = 0
    while at < len(text):
        m = _SEGMENT.match(text, at)
        if m is None or (m.group(1) is not None and at > 0 and text[at] != "."):
            raise ValueError(f"cannot read field path {path!r} at {text[at:]!r}")
        name, index, quoted = m.groups()
        parts.append(int(index) if index is not None else (name if name is not None else quoted))
        at = m.end()
    if not parts:
        raise ValueError(f"empty field path {path!r}")
    return tuple(parts)


def field_value(obj: Mapping[str, Any], path: str) -> Any:
    """The value at `path` in `obj`; LookupError naming the first missing part."""
    value: Any = obj
    walked = ""
    for part in parse_field_path(path):
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                raise LookupError(f"{walked or 'the object'} has no item [{part}]")
            value = value[part]
            walked += f"[{part}]"
        else:
            if not isinstance(value, Mapping) or part not in value:
                raise LookupError(f"{walked or 'the object'} has no field {part!r}")
            value = value[part]
            walked += f".{part}" if walked else part
    return value


@lru_cache(maxsize=512)
def _program(expression: str) -> Any:
    import cel  # noqa: PLC0415 - the CEL engine, as api/cel.py and the planner's `when` use it

    return cel.compile(expression)


def compile_problem(expression: str) -> str | None:
    """Why a CEL expression cannot be compiled, or None."""
    try:
        _program(expression)
    except ValueError as e:
        return f"invalid expression: {str(e).splitlines()[0]}"
    return None


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return None
    return next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == type_), None)


def check_met(check: ResourceCheck, obj: Mapping[str, Any]) -> bool:
    """Whether the object meets the check now. Raises ValueError when the expression yields no boolean or cannot
    be evaluated for a reason other than a field the object does not have yet."""
    if check.condition is not None:
        found = _condition(obj, check.condition)
        return found is not None and found.get("status") == "True"
    assert check.expression is not None
    try:
        value = _program(check.expression).execute({"self": dict(obj)})
    except KeyError:
        return False  # a field the engine has not written yet: not met, look again next pass
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"cannot evaluate {check.expression!r}: {e}") from None
    if not isinstance(value, bool):
        raise ValueError(f"{check.expression!r} evaluated to {value!r}, not a boolean")
    return value


def describe(check: ResourceCheck) -> str:
    return f"condition {check.condition} is True" if check.condition is not None else str(check.expression)


def _engine_message(check: ResourceCheck, obj: Mapping[str, Any]) -> str:
    """What the engine said about the failure: the failure condition's message, else status.message/reason."""
    if check.condition is not None and (found := _condition(obj, check.condition)) is not None:
        words = [str(found[k]) for k in ("reason", "message") if found.get(k)]
        if words:
            return ": ".join(words)
    status = obj.get("status")
    if isinstance(status, Mapping):
        for key in ("message", "reason"):
            if isinstance(status.get(key), str) and status[key]:
                return str(status[key])
    return ""


def read_metrics(spec: ResourceSpec, obj: Mapping[str, Any]) -> tuple[dict[str, float], str | None]:
    """The declared metrics of a succeeded object, or the problem of the first one that cannot be read."""
    out: dict[str, float] = {}
    for m in spec.metrics:
        try:
            value = field_value(obj, m.field_path)
        except (LookupError, ValueError) as e:
            return out, f"metric {m.name!r} ({m.field_path}): {e}"
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return out, f"metric {m.name!r} ({m.field_path}) is {value!r}, not a number"
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return out, f"metric {m.name!r} ({m.field_path}) is {value!r}, not a number"
        out[m.name] = float(value)
    return out, None


def resource_outcome(spec: ResourceSpec, obj: Mapping[str, Any] | None, name: str) -> TaskResult | None:
    """What the attempt's object (`name`: Kind/name, for messages) says: None while it runs, else the attempt's
    result. failureWhen is read before successWhen, so an object meeting both has failed. A missing object
    (deleted by someone) fails the attempt; the step's retry policy decides what follows."""
    if obj is None:
        return TaskResult(ok=False, message=f"object {name} disappeared")
    try:
        if spec.failure_when is not None and check_met(spec.failure_when, obj):
            said = _engine_message(spec.failure_when, obj)
            return TaskResult(
                ok=False, message=f"{name} failed ({describe(spec.failure_when)})" + (f": {said}" if said else "")
            )
        if not check_met(spec.success_when, obj):
            return None
    except ValueError as e:
        return TaskResult(ok=False, message=f"{name}: {e}")
    metrics, problem = read_metrics(spec, obj)
    if problem is not None:
        return TaskResult(ok=False, message=f"{name} succeeded but {problem}")
    return TaskResult(ok=True, metrics=metrics)


def resource_problems(spec: ResourceSpec, path: str) -> list[tuple[str, str]]:
    """(field path, message) of everything wrong with a `resource:` spec that the schema cannot say."""
    out: list[tuple[str, str]] = []
    manifest = spec.manifest
    for key in ("apiVersion", "kind"):
        value = manifest.get(key)
        if not isinstance(value, str) or not value.strip():
            out.append((f"{path}.manifest.{key}", f"{key} is required (a non-empty string)"))
        if isinstance(value, str) and "{{" in value:
            out.append((f"{path}.manifest.{key}", f"{key} cannot hold a template: the operator reads the object by it"))
    api_version = manifest.get("apiVersion")
    if isinstance(api_version, str) and api_version.count("/") > 1:
        out.append((f"{path}.manifest.apiVersion", f"{api_version!r} is not GROUP/VERSION or VERSION"))
    elif isinstance(api_version, str) and api_version.strip() and "{{" not in api_version:
        managed = managed_group_problem(api_version.strip(), str(manifest.get("kind", "")))
        if managed is not None:
            out.append((f"{path}.manifest.apiVersion", managed))
    if "status" in manifest:
        out.append(
            (f"{path}.manifest.status", "status is written by the engine that serves the kind, not the manifest")
        )
    metadata = manifest.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        out.append((f"{path}.manifest.metadata", "metadata must be an object"))
    elif isinstance(metadata, dict):
        for key in RESERVED_METADATA:
            if key in metadata:
                why = f"{key} is set by the operator (one object per attempt)"
                out.append((f"{path}.manifest.metadata.{key}", why))
        for key in ("labels", "annotations"):
            values = metadata.get(key)
            strings = isinstance(values, dict) and all(isinstance(v, str) for v in values.values())
            if values is not None and not strings:
                out.append((f"{path}.manifest.metadata.{key}", f"{key} must map names to strings"))
    for field, check in (("successWhen", spec.success_when), ("failureWhen", spec.failure_when)):
        if check is not None and check.expression is not None:
            if (problem := compile_problem(check.expression)) is not None:
                out.append((f"{path}.{field}.expression", problem))
            else:
                unknown = sorted(set(_program(check.expression).variables()) - {"self"})
                out += [(f"{path}.{field}.expression", f"unknown variable {v!r} (the object is self)") for v in unknown]
    seen: set[str] = set()
    for i, m in enumerate(spec.metrics):
        if m.name in seen:
            out.append((f"{path}.metrics[{i}].name", f"duplicate metric name {m.name!r}"))
        seen.add(m.name)
        try:
            parse_field_path(m.field_path)
        except ValueError as e:
            out.append((f"{path}.metrics[{i}].fieldPath", str(e)))
    return out
