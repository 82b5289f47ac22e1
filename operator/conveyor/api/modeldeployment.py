"""The ModelDeployment resource: a model server with rollouts, autoscaling and monitoring."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue

from conveyor.api.base import ApiModel, Condition, DnsLabel, Identifier, Quantity
from conveyor.api.cel import cel
from conveyor.api.run import Digest


class RunOutputSource(ApiModel):
    """A model produced by a Run."""

    name: DnsLabel
    """The Run."""
    step: DnsLabel
    """The step that wrote the model."""
    output: Identifier = "model"
    """Which output of that step."""


class PipelineModelSource(ApiModel):
    """The newest model of a Pipeline that passed its gate."""

    name: DnsLabel
    """The Pipeline."""
    follow: bool = True
    """Roll out each newly blessed model automatically."""


@cel(
    "(has(self.uri) ? 1 : 0) + (has(self.run) ? 1 : 0) + (has(self.pipeline) ? 1 : 0) == 1",
    "exactly one of uri, run or pipeline must be set",
)
@cel("!has(self.uri) || has(self.digest)", "a model given by uri needs its digest")
class ModelSource(ApiModel):
    """Where the model comes from."""

    uri: Annotated[str, Field(max_length=2048, pattern=r"^(s3|file)://.+")] | None = None
    """A stored model artifact (skops format)."""
    digest: Digest | None = None
    """sha256 the artifact must have; the server refuses any other content."""
    run: RunOutputSource | None = None
    """A Run's output."""
    pipeline: PipelineModelSource | None = None
    """The latest blessed model of a Pipeline."""


class RolloutStrategy(StrEnum):
    ROLLING = "Rolling"
    CANARY = "Canary"


class CanaryStep(ApiModel):
    """Send this share of traffic to the new model, then wait and judge."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """Percent of traffic (of replicas, without a service mesh)."""
    pause_seconds: Annotated[int, Field(ge=0, le=86400)] = 60
    """How long to watch before the next step."""


class CanaryAnalysis(ApiModel):
    """When a canary counts as worse than the stable model, and is rolled back."""

    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    """Highest tolerated share of 5xx responses."""
    max_latency_p99_seconds: Annotated[float, Field(gt=0)] | None = None
    """Highest tolerated p99 latency."""
    min_requests: Annotated[int, Field(ge=0)] = 20
    """Requests needed before judging."""


@cel("self.strategy != 'Canary' || size(self.steps) > 0", "a Canary rollout needs steps")
class Rollout(ApiModel):
    """How a new model version replaces the old one."""

    strategy: RolloutStrategy = RolloutStrategy.ROLLING
    """Rolling (zero unavailable) or Canary (traffic steps with analysis)."""
    steps: list[CanaryStep] = Field(default_factory=list, max_length=20)
    """Canary traffic steps."""
    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis)
    """Rollback criteria."""
    progress_deadline_seconds: Annotated[int, Field(ge=10, le=86400)] = 600
    """A new version whose pods are not all ready by then is rolled back."""


class PodsMetric(ApiModel):
    """A per-pod metric from the custom metrics API and the average value to hold it at."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Metric name as the adapter exposes it, e.g. conveyor_server_requests_per_second."""
    target_average_value: Quantity
    """Average per pod to aim for, e.g. "100"."""


class ScalingPolicyType(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


class ScalingPolicy(ApiModel):
    """At most this much change within one period (autoscaling/v2 HPAScalingPolicy)."""

    type: ScalingPolicyType
    """Pods (a number of replicas) or Percent (of the current replicas)."""
    value: Annotated[int, Field(ge=1)]
    """How many pods, or what percent."""
    period_seconds: Annotated[int, Field(ge=1, le=1800)]
    """The window the change is counted over."""


class SelectPolicy(StrEnum):
    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class ScalingRules(ApiModel):
    """How fast one direction of scaling may go (autoscaling/v2 HPAScalingRules); unset fields keep
    Kubernetes' defaults (up: no window, double or +4 pods every 15 s; down: a 300 s window, any
    amount every 15 s)."""

    stabilization_window_seconds: Annotated[int, Field(ge=0, le=3600)] | None = None
    """Act on the most cautious recommendation of this many past seconds (0: act at once)."""
    select_policy: SelectPolicy | None = None
    """Which policy wins when several disagree: Max, Min, or Disabled (never scale this way)."""
    policies: list[ScalingPolicy] | None = Field(default=None, max_length=10)
    """The allowed change per period."""


class ScalingBehavior(ApiModel):
    """Scale-up and scale-down speed, passed to the HorizontalPodAutoscaler's spec.behavior as is."""

    scale_up: ScalingRules | None = None
    """Rules for adding replicas."""
    scale_down: ScalingRules | None = None
    """Rules for removing replicas."""


@cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas")
class Autoscaling(ApiModel):
    """HorizontalPodAutoscaler settings."""

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 2
    """Fewest replicas (two by default, so a disruption never takes the model offline)."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 4
    """Most replicas."""
    target_cpu_utilization: Annotated[int, Field(ge=1, le=100)] = 70
    """Average CPU percent to aim for."""
    custom_metric: PodsMetric | None = None
    """Also scale on a per-pod metric served by a custom-metrics adapter (e.g. requests per second)."""
    behavior: ScalingBehavior | None = None
    """Scaling speed (windows, policies); unset: Kubernetes' defaults, 5 minutes before scaling down."""


class ServerSpec(ApiModel):
    """The model server's pods."""

    image: Annotated[str, Field(max_length=512)] | None = None
    """Server image; the operator's default when unset."""
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    """Container port of the Open Inference Protocol endpoint (unprivileged)."""
    cpu: Quantity | None = "500m"
    """CPU request and limit per replica."""
    memory: Quantity | None = "512Mi"
    """Memory request and limit per replica."""


class DriftMonitor(ApiModel):
    """Compare live inputs with the training data's profile."""

    threshold: Annotated[float, Field(gt=0)] = 0.2
    """Drift score above which the model counts as drifting."""
    window_seconds: Annotated[int, Field(ge=10, le=604800)] = 900
    """How long drift must persist before it is reported."""


class RetrainTrigger(ApiModel):
    """Start a Run when drift or falling accuracy is reported."""

    pipeline: DnsLabel
    """The Pipeline to run."""
    parameters: dict[Identifier, JsonValue] = Field(default_factory=dict)
    """Parameter overrides."""
    min_interval_seconds: Annotated[int, Field(ge=60)] = 3600
    """Never start retraining more often than this."""


class Monitoring(ApiModel):
    """Drift, live accuracy and retraining."""

    drift: DriftMonitor | None = None
    """Watch input drift against the training profile."""
    min_accuracy: Annotated[float, Field(ge=0, le=1)] | None = None
    """Retrain when live accuracy from fed-back labels drops below this."""
    min_labels: Annotated[int, Field(ge=1, le=1000000)] = 50
    """Fed-back labels needed before live accuracy is judged."""
    prediction_sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Share of requests whose predictions are logged to the artifact store for joining with labels."""
    retrain: RetrainTrigger | None = None
    """Start a Run of this Pipeline when drift or accuracy says so."""


class ModelDeploymentSpec(ApiModel):
    """What to serve and how."""

    model: ModelSource
    """The model."""
    server: ServerSpec = Field(default_factory=ServerSpec)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    rollout: Rollout = Field(default_factory=Rollout)
    pod_disruption_budget: bool = True
    """Keep at least one replica through voluntary disruptions."""
    monitoring: Monitoring | None = None


class ServedModel(ApiModel):
    """One model version."""

    uri: str
    """Where the artifact is."""
    digest: Digest
    """sha256 of the artifact."""
    version: str | None = None
    """Short name of the version (the first 12 hex digits of the digest), as in the server's metrics."""


class RejectedModel(ApiModel):
    """A model version that failed to roll out; it is not tried again until the spec changes."""

    uri: str
    """Where the artifact is."""
    digest: Digest
    """sha256 of the artifact."""
    reason: Annotated[str, Field(max_length=64)]
    """ModelRejected (the server refused it), ProgressDeadlineExceeded or CanaryFailed."""
    message: Annotated[str, Field(max_length=4096)] = ""
    """What went wrong, in the server's or the analysis' words."""
    at: datetime | None = None
    """When it was rolled back."""


class TrafficShare(ApiModel):
    """Share of requests one model version receives."""

    digest: Digest
    """The model version."""
    weight: Annotated[int, Field(ge=0, le=100)]
    """Percent of traffic."""


class CanaryStatus(ApiModel):
    """A canary in progress."""

    model: ServedModel
    """The model on trial."""
    step: int = 0
    """Index of the current step in spec.rollout.steps."""
    step_started_at: datetime | None = None
    """When the current step's pause began (its pods all ready)."""
    promoting: bool = False
    """All steps passed: the stable Deployment is being moved to the canary's model."""
    requests: int = 0
    """Requests the canary answered so far."""
    error_rate: float | None = None
    """Share of its answers that were not 2xx."""
    latency_p99_seconds: float | None = None
    """p99 of its inference latency (histogram bucket bound)."""


class DriftMeasure(StrEnum):
    MEAN_SHIFT = "MeanShift"
    PSI = "PSI"


class FeatureDrift(ApiModel):
    """How far one input feature moved from its training profile."""

    name: str
    """The input feature."""
    score: float
    """MeanShift: |live mean - training mean| / training std (drift above 0.5); PSI: the index (above 0.2)."""
    measure: DriftMeasure = DriftMeasure.MEAN_SHIFT
    """MeanShift for a numeric feature, PSI (population stability index of category shares) for a categorical one."""
    drifted: bool = False
    """Whether the feature counted as drifted (a numeric feature also drifts when its spread changes)."""


class DriftStatus(ApiModel):
    """Live inputs against the training data's profile."""

    score: float
    """Share of monitored features that drifted (0..1)."""
    rows: int = 0
    """Rows (present values) of the smallest feature window behind the score."""
    above_since: datetime | None = None
    """When the score first exceeded the threshold (unset while below)."""
    features: list[FeatureDrift] = Field(default_factory=list, max_length=10)
    """The most shifted features: drifted ones first, then by score relative to its measure's threshold."""
    at: datetime | None = None
    """When it was measured."""


class LiveAccuracy(ApiModel):
    """Predictions joined with fed-back labels, per model version."""

    version: str
    """The model version (12 hex digits of its digest)."""
    labels: int = 0
    """Labels joined with a logged prediction."""
    accuracy: float | None = None
    """Share correct (classification)."""
    mean_absolute_error: float | None = None
    """Mean absolute error (regression)."""


class RetrainingStatus(ApiModel):
    """The last retraining Run this deployment started."""

    run: str
    """The Run's name."""
    reason: Annotated[str, Field(max_length=64)]
    """Drift or AccuracyDropped."""
    message: Annotated[str, Field(max_length=4096)] = ""
    """What was measured."""
    at: datetime
    """When it was started."""


class ModelDeploymentStatus(ApiModel):
    """What is serving now."""

    observed_generation: int | None = None
    """The generation last acted on."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Degraded, Drifting."""
    current: ServedModel | None = None
    """The model serving now."""
    previous: ServedModel | None = None
    """The one before (the rollback target)."""
    rejected: RejectedModel | None = None
    """The last version that failed to roll out."""
    canary: CanaryStatus | None = None
    """The canary in progress, if any."""
    ready_replicas: int = 0
    """Replicas whose model is loaded and ready."""
    traffic: list[TrafficShare] = Field(default_factory=list)
    """How requests are split between model versions."""
    drift: DriftStatus | None = None
    """Latest drift measurement."""
    drift_score: float | None = None
    """Latest drift score, for kubectl get."""
    live_accuracy: list[LiveAccuracy] = Field(default_factory=list, max_length=20)
    """Live accuracy per model version."""
    retraining: RetrainingStatus | None = None
    """The last retraining Run started."""
    model_digest: str | None = None
    """Short digest of the current model, for kubectl get."""


class ModelDeployment(ApiModel):
    """A ModelDeployment object as stored in Kubernetes."""

    api_version: Literal["conveyor.dev/v1alpha1"] = "conveyor.dev/v1alpha1"
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
