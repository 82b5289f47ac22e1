"""What a shell hands the step runtime (TaskSpec) and what the runtime reports back (TaskResult).

Both shells write a TaskSpec: the local runner to a file for a subprocess, the operator into a
Job's environment. Credentials are never part of it; the runtime reads them from its environment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from conveyor.api.run import ArtifactRef
from conveyor.api.store import StoreConfig as StoreConfig  # noqa: PLC0414 - re-exported: its home was here


def unit_key(step: str, index: int) -> str:
    """The state key of one item of a fanned-out step."""
    return f"{step}[{index}]"


def step_of(key: str) -> str:
    """The step a state key belongs to (`train[3]` → `train`)."""
    return key.split("[", 1)[0]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectionItem(_Model):
    """One member of a fan-in input: the fanned-out item and the digest of its output."""

    item: JsonValue = None
    digest: str


class TaskInput(_Model):
    name: str
    digest: str | None = None
    """Content digest of a stored artifact (None for an external URI without a declared digest)."""
    uri: str | None = None
    """External source (file://, https://, s3://) when not a stored artifact."""
    collection: bool = False
    """A fan-in: `items` lists one artifact per fanned-out item; the digest covers the whole list."""
    items: list[CollectionItem] | None = None


class TaskSpec(_Model):
    """One attempt of one step (or of one fanned-out item of a step)."""

    run_id: str
    step: str
    attempt: Annotated[int, Field(ge=1)]
    item_index: int | None = None
    item: JsonValue = None
    component: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    resource: dict[str, Any] | None = None
    """A resource step: its manifest with the templates rendered (the shell creates it; no step runtime runs)."""
    inputs: list[TaskInput] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    store: StoreConfig
    cache_key: str

    @property
    def key(self) -> str:
        """The planner's state key: the step, or `step[i]` for one item of a fan-out."""
        return self.step if self.item_index is None else unit_key(self.step, self.item_index)


class TaskResult(_Model):
    """Small enough for a Kubernetes termination message (4 KiB): names, digests, metrics."""

    ok: bool
    outputs: list[ArtifactRef] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    message: str | None = None
    finished_at: datetime | None = None
    """When the step's work ended, by the step's clock (sub-second, unlike a pod's finishedAt)."""


def result_document(run_id: str, step: str, attempt: int) -> str:
    """Where the runtime stores an attempt's full TaskResult (the termination message is a copy)."""
    return f"runs/{run_id}/results/{step}-{attempt}.json"


def units_document(run_id: str) -> str:
    """Where the operator keeps the per-item states of a Run's fan-outs (too many for the Run object)."""
    return f"runs/{run_id}/units.json"
