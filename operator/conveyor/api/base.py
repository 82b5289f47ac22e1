"""Shared pieces of every Conveyor schema: the model base, names, conditions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from conveyor.api.cel import rules_of, violations

GROUP = "conveyor.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class ApiModel(BaseModel):
    """Base of every schema: camelCase on the wire, unknown fields rejected (never ignored)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        use_attribute_docstrings=True,
        validate_default=True,
    )

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        if rules_of(type(self)):
            failed = violations(type(self), self.to_wire())
            if failed:
                raise ValueError("; ".join(failed))
        return self

    def to_wire(self) -> dict[str, Any]:
        """The Kubernetes JSON form: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# A DNS-1123 label: what Kubernetes accepts in object names, and therefore in the Job names
# and labels derived from step names.
DnsLabel = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]
# Names usable inside templates ("{{ params.learning_rate }}").
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"),
]
# A Kubernetes resource quantity ("500m", "2Gi", "1").
Quantity = Annotated[
    str,
    StringConstraints(
        max_length=32,
        pattern=r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$",
    ),
]


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A Kubernetes-convention condition: one observation of one aspect of the object."""

    type: Annotated[str, Field(max_length=316)]
    """CamelCase kind of the condition, e.g. Succeeded, Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Annotated[str, Field(max_length=1024)]
    """CamelCase machine-readable reason for the last transition."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable detail."""
    last_transition_time: datetime
    """When the status last changed (not when it was last checked)."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this condition was computed from."""


class ObjectReference(ApiModel):
    """A reference to another Conveyor object in the same namespace."""

    name: DnsLabel
    """Name of the object."""
