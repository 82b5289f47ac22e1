"""The Run resource: one execution of a Pipeline, whose status is the whole story."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue

from conveyor.api.base import ApiModel, Condition, DnsLabel, Identifier, ObjectReference
from conveyor.api.cel import cel
from conveyor.api.pipeline import PipelineSpec

Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class RunPhase(StrEnum):
    """A summary for people; conditions are what programs should read."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class StepPhase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"  # for approval or a retry's backoff
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"  # its `when` was false, or an upstream step was skipped
    CANCELLED = "Cancelled"


class Decision(StrEnum):
    APPROVE = "Approve"
    REJECT = "Reject"


class StepApproval(ApiModel):
    """A person's decision on a step that requires approval."""

    step: DnsLabel
    """The step decided on."""
    decision: Decision
    """Approve or Reject."""
    by: Annotated[str, Field(max_length=256)] | None = None
    """Who decided."""
    comment: Annotated[str, Field(max_length=4096)] | None = None
    """Why."""


@cel("has(self.pipelineRef) != has(self.pipelineSpec)", "exactly one of pipelineRef or pipelineSpec must be set")
@cel(
    "!has(oldSelf.pipelineRef) || self.pipelineRef == oldSelf.pipelineRef",
    "pipelineRef is immutable",
)
class RunSpec(ApiModel):
    """What to execute, with which parameters."""

    pipeline_ref: ObjectReference | None = None
    """The Pipeline to run, in the Run's namespace."""
    pipeline_spec: PipelineSpec | None = None
    """An inline pipeline instead of a reference."""
    parameters: dict[Identifier, JsonValue] = Field(default_factory=dict)
    """Overrides of the pipeline's parameter defaults. Read once, when the Run starts; the values
    used are recorded in status.parameters (the API server cannot compare free-form values)."""
    cancel: bool = False
    """Set to true to stop the Run: running steps are killed, nothing new starts."""
    approvals: list[StepApproval] = Field(default_factory=list)
    """Decisions on steps that require approval."""


class ArtifactRef(ApiModel):
    """One stored artifact: where it is and what its content hashes to."""

    name: Identifier
    """The output's name."""
    uri: Annotated[str, Field(max_length=2048)]
    """Where the bytes are."""
    digest: Digest
    """sha256 of the content."""
    size: Annotated[int, Field(ge=0)] | None = None
    """Bytes."""


class FanOutStatus(ApiModel):
    """Counts for a fanned-out step; per-item detail lives in the artifact store."""

    total: int = 0
    """Items in the fan-out."""
    succeeded: int = 0
    """Items done."""
    failed: int = 0
    """Items failed for good."""
    running: int = 0
    """Items executing now."""
    skipped: int = 0
    """Items not run."""
    record_uri: str | None = None
    """Where the per-item records are."""


class StepStatus(ApiModel):
    """Compact state of one step."""

    name: DnsLabel
    """The step."""
    phase: StepPhase = StepPhase.PENDING
    """Pending, Waiting, Running, Succeeded, Failed, Skipped or Cancelled."""
    attempts: Annotated[int, Field(ge=0)] = 0
    """Attempts started so far."""
    job_name: str | None = None
    """The Job of the current or last attempt."""
    resource_name: str | None = None
    """A resource step: the object (Kind/name) of the current or last attempt (deleted once that attempt ended)."""
    cache_key: Digest | None = None
    """Key over resolved template, image, parameters and input digests."""
    cache_hit: bool = False
    """Outputs were reused from an earlier identical execution; no pod ran."""
    created_at: datetime | None = None
    """When the step's first Job was created (or its cache hit decided)."""
    started_at: datetime | None = None
    """When the current or last attempt started."""
    finished_at: datetime | None = None
    """When the last attempt finished."""
    next_attempt_at: datetime | None = None
    """When a retry may start (while in backoff)."""
    outputs: list[ArtifactRef] = Field(default_factory=list)
    """Stored outputs with their digests."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Numbers the step reported (accuracy, rows, ...)."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """Why it failed or was skipped."""
    fan_out: FanOutStatus | None = None
    """Counts when the step fans out."""


class PipelineVersion(ApiModel):
    """Which version of its Pipeline a Run ran: the object's generation and the digest of the spec itself."""

    generation: Annotated[int, Field(ge=1)] | None = None
    """The Pipeline's metadata.generation when the Run ran it (absent for an inline pipelineSpec). The API server
    moves it on every change of the Pipeline's spec."""
    spec_digest: Digest
    """sha256 of the resolved spec in canonical JSON, as the run record's pipelineSpecDigest: the same spec has
    the same digest whatever object or file it came from (`conveyor rerun` finds the spec by it)."""


class RunStatus(ApiModel):
    """Everything the operator knows about the Run."""

    observed_generation: int | None = None
    """The generation last acted on."""
    phase: RunPhase = RunPhase.PENDING
    """Summary for people; read conditions in programs."""
    conditions: list[Condition] = Field(default_factory=list)
    """Succeeded (True when done well, False with a reason when not)."""
    progress: str | None = None
    """Steps finished / total, for kubectl get."""
    pipeline: str | None = None
    """Name of the pipeline, or "(inline)"."""
    pipeline_version: PipelineVersion | None = None
    """The version of the pipeline the Run ran (`conveyor pipeline versions NAME` lists them with their Runs)."""
    started_at: datetime | None = None
    """When the first step was launched."""
    finished_at: datetime | None = None
    """When the Run reached a final phase."""
    parameters: dict[str, JsonValue] = Field(default_factory=dict)
    """Resolved parameters (defaults applied)."""
    steps: list[StepStatus] = Field(default_factory=list)
    """One compact entry per step."""
    record_uri: str | None = None
    """Where the full lineage record is stored."""


class Run(ApiModel):
    """A Run object as stored in Kubernetes."""

    api_version: Literal["conveyor.dev/v1alpha1"] = "conveyor.dev/v1alpha1"
    kind: Literal["Run"] = "Run"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RunSpec
    status: RunStatus | None = None
