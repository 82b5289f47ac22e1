"""Generates the CustomResourceDefinitions from the pydantic models, the single source of every schema.

pydantic writes JSON Schema (draft 2020-12); Kubernetes wants a *structural* OpenAPI v3.0
schema: every level typed, no $ref, no additionalProperties beside properties, no null
type, boolean exclusive bounds. This module translates one into the other and adds what
only Kubernetes knows: CEL rules, list types, printer columns, short names.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from conveyor.api.base import GROUP, VERSION
from conveyor.api.cel import rules_of
from conveyor.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from conveyor.api.pipeline import PipelineSpec, PipelineStatus
from conveyor.api.run import RunSpec, RunStatus

Schema = dict[str, Any]

# Keys of JSON Schema that a structural OpenAPI v3.0 schema does not accept.
_DROPPED_KEYS = frozenset({"title", "$defs", "const", "discriminator", "propertyNames"})
# A model's own list map key (class attribute __list_map_key__), when its name is not unique in a list.
_LIST_KEY_MARKER = "x-conveyor-list-map-key"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""

    def to_wire(self) -> Schema:
        col: Schema = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            col["description"] = self.description
        if self.priority:
            col["priority"] = self.priority
        return col


@dataclass(frozen=True)
class Kind:
    """The facts about one custom resource kind that are not in its pydantic model."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: tuple[PrinterColumn, ...]

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")

KINDS: tuple[Kind, ...] = (
    Kind(
        kind="Pipeline",
        plural="pipelines",
        short_names=("pl", "cvpl"),
        spec=PipelineSpec,
        status=PipelineStatus,
        description="A reusable, versioned DAG of ML steps; Runs execute it.",
        columns=(
            PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
            PrinterColumn("Schedule", ".spec.schedule.cron"),
            PrinterColumn("Last Run", ".status.lastRun"),
            _AGE,
        ),
    ),
    Kind(
        kind="Run",
        plural="runs",
        short_names=("cvrun",),
        spec=RunSpec,
        status=RunStatus,
        description="One execution of a Pipeline with parameter overrides; its status is the run's record.",
        columns=(
            PrinterColumn("Pipeline", ".status.pipeline"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Steps", ".status.progress", description="Steps finished / total"),
            PrinterColumn("Reason", '.status.conditions[?(@.type=="Succeeded")].reason', priority=1),
            _AGE,
        ),
    ),
    Kind(
        kind="ModelDeployment",
        plural="modeldeployments",
        short_names=("md", "mdep"),
        spec=ModelDeploymentSpec,
        status=ModelDeploymentStatus,
        description="A served model: Deployment, Service, autoscaling, rollouts and drift monitoring.",
        columns=(
            PrinterColumn("Model", ".status.modelDigest"),
            PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
            PrinterColumn("Replicas", ".status.readyReplicas", "integer"),
            PrinterColumn("Drift", ".status.driftScore", "number", priority=1),
            _AGE,
        ),
    ),
)


class _KubernetesJsonSchema(GenerateJsonSchema):
    """Adds each model's CEL rules to its schema as x-kubernetes-validations."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        """Give default_factory fields a default too, so the API server fills in nested defaults
        (retries, cache, ...) and `kubectl get -o yaml` shows what will happen."""
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().default_schema(schema)
        value = factory()  # type: ignore[call-arg]
        js = self.generate_inner(schema["schema"])
        # The API server validates a default as written (without nested defaults), so write it whole.
        js["default"] = (
            value.model_dump(mode="json", by_alias=True, exclude_none=True) if isinstance(value, BaseModel) else value
        )
        return js

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        js = super().model_schema(schema)
        if key := getattr(schema["cls"], "__list_map_key__", None):
            js[_LIST_KEY_MARKER] = key  # read, and removed, by _add_list_types
        rules = rules_of(schema["cls"])
        if rules:
            js["x-kubernetes-validations"] = [{"rule": r.rule, "message": r.message} for r in reversed(rules)]
        return js


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    """Inline $refs and translate JSON Schema idioms into structural OpenAPI v3.0."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        target.update(node)  # the field's own description and default win over the model's
        node = target
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union of {len(options)} types structurally: {options}")
        merged = dict(options[0])
        merged.update(node)
        node = merged
    if "allOf" in node and len(node["allOf"]) == 1:
        merged = dict(node.pop("allOf")[0])
        merged.update(node)
        node = merged
    if "$ref" in node:  # the single remaining option of a union was itself a reference
        return _resolve(node, defs)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue  # the API server prunes unknown fields and strict field validation rejects them
        if key == "default" and value is None:
            continue
        if key == "patternProperties":
            # dict[Identifier, X]: the API server has no patternProperties; check keys with CEL.
            ((pattern, value_schema),) = value.items()
            values = _resolve(value_schema, defs)
            out["additionalProperties"] = values
            # CEL cannot be declared over a map of free-form values; those keys are checked by
            # the validator the CLI and the operator share instead.
            if "x-kubernetes-preserve-unknown-fields" not in json.dumps(values):
                out.setdefault("x-kubernetes-validations", []).append(
                    {"rule": f"self.all(k, k.matches({_cel_string(pattern)}))", "message": f"keys must match {pattern}"}
                )
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "properties":
            out[key] = {k: _resolve(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _resolve(value, defs)
        else:
            out[key] = value
    untyped = not out.get("type") and not out.get("x-kubernetes-int-or-string")
    if untyped and not any(k in out for k in ("properties", "items")):
        # A free-form JSON value (pydantic's JsonValue): keep whatever the user wrote.
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "object" and "additionalProperties" in out and "properties" in out:
        raise ValueError("structural schemas cannot mix properties and additionalProperties")
    return out


def _cel_string(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _add_list_types(schema: Schema) -> Schema:
    """Lists of named things become map-lists keyed by name: the API server rejects duplicates."""
    if schema.get("type") == "array":
        items = schema.get("items", {})
        key = items.pop(_LIST_KEY_MARKER, None) or next(
            (k for k in ("name", "type") if k in items.get("required", [])), None
        )
        if items.get("type") == "object" and key:
            schema["x-kubernetes-list-type"] = "map"
            schema["x-kubernetes-list-map-keys"] = [key]
        _add_list_types(items)
    for sub in schema.get("properties", {}).values():
        _add_list_types(sub)
    if isinstance(schema.get("additionalProperties"), dict):
        _add_list_types(schema["additionalProperties"])
    return schema


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3.0 schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_KubernetesJsonSchema)
    defs = raw.get("$defs", {})
    return _add_list_types(_resolve(raw, defs))


def crd(kind: Kind) -> Schema:
    """One CustomResourceDefinition object."""
    root: Schema = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "conveyor.dev/v1alpha1"},
            "kind": {"type": "string", "description": kind.kind},
            "metadata": {"type": "object"},
            "spec": openapi_schema(kind.spec),
            "status": openapi_schema(kind.status),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "conveyor"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["conveyor"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_wire() for c in kind.columns],
                }
            ],
        },
    }


def kopf_peering_crds() -> list[Schema]:
    """kopf's peering resources, through which operator replicas agree which one is active (HA)."""
    status = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    out = []
    for kind, scope in (("ClusterKopfPeering", "Cluster"), ("KopfPeering", "Namespaced")):
        plural = kind.lower() + "s"
        out.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.kopf.dev", "labels": {"app.kubernetes.io/part-of": "conveyor"}},
                "spec": {
                    "scope": scope,
                    "group": "kopf.dev",
                    "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {"openAPIV3Schema": {"type": "object", "properties": {"status": status}}},
                        }
                    ],
                },
            }
        )
    return out


def render_crds() -> dict[str, str]:
    """File name → YAML text of every CRD, exactly as committed under crds/ (and the chart's crds/)."""
    header = "# Generated by `conveyor crds` from conveyor.api; do not edit.\n"
    files = {f"{k.crd_name}.yaml": header + yaml.safe_dump(crd(k), sort_keys=False, width=100) for k in KINDS}
    files["kopf-peering.yaml"] = header + yaml.safe_dump_all(kopf_peering_crds(), sort_keys=False, width=100)
    return files
