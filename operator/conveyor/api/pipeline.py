"""The Pipeline resource: a reusable, versioned DAG of steps."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue, model_validator

from conveyor.api.base import ApiModel, Condition, DnsLabel, Identifier, Quantity
from conveyor.api.cel import cel
from conveyor.api.pod import PodSettings


class ParameterType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    LIST = "list"


class Parameter(ApiModel):
    """A typed pipeline parameter; a Run may override its default."""

    name: Identifier
    """Name used in templates as {{ params.NAME }}."""
    type: ParameterType = ParameterType.STRING
    """Type the value must have: string, integer, number, boolean or list."""
    default: JsonValue = None
    """Value used when a Run does not set one. A parameter without a default is required."""
    description: str | None = None
    """What the parameter means, for people."""


class Backoff(ApiModel):
    """Exponential backoff between attempts: initial * factor^(attempt-1), capped at max."""

    initial_seconds: Annotated[float, Field(ge=0, le=86400)] = 5.0
    """Delay before the second attempt."""
    factor: Annotated[float, Field(ge=1, le=10)] = 2.0
    """Multiplier applied per further attempt."""
    max_seconds: Annotated[float, Field(ge=0, le=86400)] = 300.0
    """Upper bound of any single delay."""


class RetryPolicy(ApiModel):
    """How often a failed step is attempted again."""

    limit: Annotated[int, Field(ge=0, le=100)] = 0
    """Retries after the first attempt (0: fail on the first failure)."""
    backoff: Backoff = Field(default_factory=Backoff)
    """Delay between attempts."""


class CachePolicy(ApiModel):
    """Whether a step may reuse the outputs of an earlier identical execution."""

    enabled: bool = True
    """Reuse outputs when the cache key (resolved template, image, parameters, input digests) matches."""


class EnvVar(ApiModel):
    """An environment variable for a container step."""

    name: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")]
    """Variable name."""
    value: str = ""
    """Value; may contain templates."""


class ContainerSpec(ApiModel):
    """A step that runs a command in an image of your own."""

    image: Annotated[str, Field(min_length=1, max_length=512)]
    """Container image. Pin it by digest for reproducible cache keys."""
    command: list[str] = Field(min_length=1)
    """Entrypoint and arguments; may contain templates."""
    args: list[str] = Field(default_factory=list)
    """Further arguments; may contain templates."""
    env: list[EnvVar] = Field(default_factory=list)
    """Environment variables."""


class Resources(ApiModel):
    """Compute a step asks for; requests and limits are set equal."""

    cpu: Quantity | None = None
    """CPU, e.g. 500m or 2."""
    memory: Quantity | None = None
    """Memory, e.g. 512Mi."""
    gpu: Annotated[int, Field(ge=0, le=16)] | None = None
    """Number of nvidia.com/gpu devices."""


@cel("has(self.step) != has(self.uri)", "exactly one of step or uri must be set")
@cel("has(self.step) == has(self.output)", "step and output go together")
class StepInput(ApiModel):
    """An input of a step: another step's output, or an external URI."""

    name: Identifier
    """Name used in templates as {{ inputs.NAME }} (the local path of the fetched file)."""
    step: DnsLabel | None = None
    """The step whose output this is."""
    output: Identifier | None = None
    """Which output of that step."""
    uri: Annotated[str, Field(max_length=2048, pattern=r"^(s3|file|https)://.+")] | None = None
    """External data: s3://bucket/key, file:///path or https://host/path."""
    digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")] | None = None
    """Expected sha256 of an external input; the step fails if the content differs."""


class StepOutput(ApiModel):
    """An artifact a step produces; stored content-addressed with its sha256."""

    name: Identifier
    """Name other steps use to refer to it; {{ outputs.NAME }} is the path to write."""


class FanOut(ApiModel):
    """Run the step once per item; downstream steps receive all items' outputs (fan-in)."""

    items: list[JsonValue] | None = None
    """Literal list; each element is {{ item }} in templates."""
    parameter: Identifier | None = None
    """A list-typed parameter whose value is the list of items."""
    grid: dict[Identifier, list[JsonValue]] | None = None
    """Cartesian product; each combination is {{ item.KEY }} in templates."""
    max_concurrency: Annotated[int, Field(ge=1, le=10000)] | None = None
    """At most this many items run at once."""

    @model_validator(mode="after")
    def _one_source(self) -> FanOut:
        given = [n for n in ("items", "parameter", "grid") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of items, parameter or grid must be set")
        return self


class Approval(ApiModel):
    """Pause before this step until a person approves it on the Run."""

    required: bool = True
    """Whether approval is needed."""
    message: str | None = None
    """What the approver should check."""


@cel("has(self.expression) != has(self.condition)", "exactly one of expression or condition must be set")
class ResourceCheck(ApiModel):
    """When a resource step's object has succeeded (or failed): a CEL expression over it, or a condition type."""

    expression: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    """CEL over the object as `self`, e.g. "self.status.jobStatus == 'SUCCEEDED'". An expression that reads a field
    the object does not have yet (an engine that has not written its status) counts as false."""
    condition: Annotated[str, Field(min_length=1, max_length=316, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_./]*$")] | None = (
        None
    )
    """A condition type: met when the object's status.conditions holds it with status "True"."""


class ResourceMetric(ApiModel):
    """A number the step reads from its object once it has succeeded, recorded as a step metric."""

    name: Identifier
    """Metric name, read downstream as steps.STEP.metrics.NAME."""
    field_path: Annotated[str, Field(min_length=1, max_length=1024)]
    """Where in the object, e.g. status.results.accuracy or status.trials[0].score (a leading `.` or `{...}`
    JSONPath braces are accepted). The value must be a number; a missing or non-numeric value fails the attempt."""


class ResourceSpec(ApiModel):
    """A step that hands its work to a Kubernetes object of any kind (a RayJob, a SparkApplication, ...) and waits for
    the engine that serves that kind to finish it. The operator creates the object (owned by the Run, named per
    attempt), reads it every pass and deletes it once the attempt has ended."""

    manifest: dict[str, JsonValue]
    """The object to create: apiVersion, kind and whatever its engine reads; string values may contain templates
    ({{ params.X }}, {{ run.name }}, ...). metadata.name and metadata.namespace are the operator's to set."""
    success_when: ResourceCheck
    """When the attempt succeeded."""
    failure_when: ResourceCheck | None = None
    """When the attempt failed (checked first); without it, only the step's timeout ends a failing attempt."""
    metrics: list[ResourceMetric] = Field(default_factory=list, max_length=64)
    """Numbers read from the succeeded object as the step's metrics."""


@cel(
    "[has(self.uses), has(self.container), has(self.resource)].filter(x, x).size() == 1",
    "exactly one of uses, container or resource must be set",
)
class Step(ApiModel):
    """One node of the DAG: a built-in component, a container, or a custom resource handed to another engine."""

    name: DnsLabel
    """Unique within the pipeline; used in Job names and references."""
    uses: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")] | None = None
    """A built-in component: ingest, validate, preprocess, train, evaluate, ..."""
    with_: dict[str, JsonValue] | None = Field(default=None, alias="with")
    """Configuration of the built-in component; string values may contain templates."""
    container: ContainerSpec | None = None
    """Your own image and command."""
    resource: ResourceSpec | None = None
    """An object of any kind for another engine to run (on a cluster only): created, watched and deleted per
    attempt, with this step's timeout and retries."""
    inputs: list[StepInput] = Field(default_factory=list)
    """Artifacts the step reads."""
    outputs: list[StepOutput] = Field(default_factory=list)
    """Artifacts the step writes."""
    depends_on: list[DnsLabel] = Field(default_factory=list)
    """Steps that must finish first even though no artifact links them."""
    when: Annotated[str, Field(max_length=1024)] | None = None
    """Condition to run at all, e.g. "params.deploy and steps.evaluate.metrics.roc_auc >= 0.9"."""
    for_each: FanOut | None = None
    """Fan-out over a list or a parameter grid."""
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    """Attempts after a failure."""
    timeout_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] | None = None
    """Wall-clock limit of one attempt."""
    start_timeout_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] | None = None
    """How long an attempt's pod may take to start (be created, scheduled, pull its image) before the attempt
    fails, naming what its pod waits for, and the retry policy decides; default: the operator's
    CONVEYOR_POD_START_TIMEOUT_SECONDS. On a cluster only: the local runner starts no pods."""
    cache: CachePolicy = Field(default_factory=CachePolicy)
    """Reuse of earlier identical executions."""
    resources: Resources | None = None
    """CPU, memory and GPUs for the step's pod."""
    approval: Approval | None = None
    """Require a person's approval before the step starts."""
    pod: PodSettings | None = None
    """Pod settings of this step (Secrets, volumes, placement, ...), merged over the pipeline's spec.pod."""


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class Schedule(ApiModel):
    """Create Runs on a cron schedule."""

    cron: Annotated[str, Field(min_length=1, max_length=128)]
    """Standard five-field cron expression."""
    time_zone: Annotated[str, Field(max_length=64)] = "UTC"
    """IANA time zone the expression is read in."""
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    """What to do when the previous scheduled Run is still going."""
    successful_runs_history_limit: Annotated[int, Field(ge=0, le=1000)] = 10
    """Succeeded scheduled Runs to keep."""
    failed_runs_history_limit: Annotated[int, Field(ge=0, le=1000)] = 10
    """Failed scheduled Runs to keep."""
    suspend: bool = False
    """Stop creating Runs without deleting the schedule."""


class S3PrefixTrigger(ApiModel):
    """Start a Run when new objects appear under an S3 prefix."""

    uri: Annotated[str, Field(pattern=r"^s3://.+")]
    """The prefix to watch, s3://bucket/prefix/."""
    poll_seconds: Annotated[int, Field(ge=10, le=86400)] = 60
    """How often to look."""


class DriftTrigger(ApiModel):
    """Start a Run when a ModelDeployment reports drift."""

    model_deployment: DnsLabel
    """Name of the ModelDeployment in the same namespace."""


@cel("has(self.s3) != has(self.drift)", "exactly one of s3 or drift must be set")
class Trigger(ApiModel):
    """An event that starts a Run of this pipeline."""

    s3: S3PrefixTrigger | None = None
    """New data under a prefix."""
    drift: DriftTrigger | None = None
    """Drift alert from a model deployment."""
    parameters: dict[Identifier, JsonValue] = Field(default_factory=dict)
    """Parameter overrides for the Runs it starts."""


class PipelineSpec(ApiModel):
    """What a pipeline is: parameters, steps and when it runs."""

    description: str | None = None
    """What the pipeline is for."""
    parameters: list[Parameter] = Field(default_factory=list, max_length=256)
    """Typed inputs with defaults."""
    steps: list[Step] = Field(min_length=1, max_length=512)
    """The DAG's nodes; edges come from inputs and dependsOn."""
    on_exit: Annotated[list[Step], Field(max_length=64)] | None = None
    """Steps that run once every step above has finished, whatever the outcome (succeeded, failed, cancelled or
    timed out): notifications and cleanup. They read the outcome as {{ run.phase }}, {{ run.failedSteps }} and
    {{ run.message }} (and run.phase, run.failedSteps in `when`), may read outputs of steps that succeeded, and may
    depend on earlier onExit steps. Their failure is recorded (condition ExitStepsSucceeded) but does not change
    the Run's phase, which is the steps' outcome."""
    fail_fast: bool = True
    """Stop launching new steps after one fails (false: let independent branches finish)."""
    timeout_seconds: Annotated[int, Field(ge=1, le=30 * 86400)] | None = None
    """Wall-clock limit of a whole Run."""
    parallelism: Annotated[int, Field(ge=1, le=10000)] | None = None
    """At most this many steps of one Run at once."""
    max_concurrent_runs: Annotated[int, Field(ge=1, le=10000)] | None = None
    """At most this many Runs of this pipeline at once; further Runs wait."""
    schedule: Schedule | None = None
    """Create Runs on a cron schedule."""
    triggers: list[Trigger] = Field(default_factory=list, max_length=16)
    """Events that start Runs."""
    pod: PodSettings | None = None
    """Pod settings every step starts from (Secrets, volumes, placement, ...); a step's own pod settings merge
    over them."""

    def all_steps(self) -> list[Step]:
        """The steps, then the onExit steps: every step a Run of this pipeline may execute."""
        return [*self.steps, *(self.on_exit or [])]


class TriggerStatus(ApiModel):
    """What one trigger has seen and started."""

    index: Annotated[int, Field(ge=0)]
    """Position of the trigger in spec.triggers."""
    watermark: datetime | None = None
    """S3: the newest object time already answered (objects up to it started a Run, or were there first)."""
    watermark_keys: list[str] = Field(default_factory=list, max_length=100)
    """S3: keys modified exactly at the watermark, so an object at the same second is not missed or repeated."""
    episode: datetime | None = None
    """Drift: the start of the drift episode that last started a Run."""
    last_run: str | None = None
    """The last Run this trigger started."""
    last_fired_at: datetime | None = None
    """When it started that Run."""


class PipelineStatus(ApiModel):
    """What the operator last saw of the pipeline."""

    observed_generation: int | None = None
    """The generation last validated."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready: the spec is valid and Runs can start."""
    last_scheduled_time: str | None = None
    """When the schedule last created a Run."""
    last_run: str | None = None
    """Name of the newest Run."""
    triggers: list[TriggerStatus] = Field(default_factory=list, max_length=16)
    """Per trigger: what it has seen and the last Run it started."""


class Pipeline(ApiModel):
    """A Pipeline object as stored in Kubernetes (or in a YAML file)."""

    api_version: Literal["conveyor.dev/v1alpha1"] = "conveyor.dev/v1alpha1"
    kind: Literal["Pipeline"] = "Pipeline"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: PipelineSpec
    status: PipelineStatus | None = None
