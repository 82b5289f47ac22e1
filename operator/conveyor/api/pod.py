"""Pod settings of a step: environment from Secrets and ConfigMaps, volumes, placement, identity, metadata.

The shapes are Kubernetes' own (a block copied from a Deployment fits), restricted to what the
"restricted" PodSecurity profile allows: no hostPath or other node-level volume, no securityContext,
no host namespaces. Those fields are refused by name instead of being silently dropped.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from conveyor.api.base import ApiModel, DnsLabel, Quantity
from conveyor.api.cel import cel

RESTRICTED = "step pods run under the restricted PodSecurity profile (non-root, read-only root filesystem)"

# Pod fields a step may not set, because they would break that profile or the runtime's own settings.
FORBIDDEN_POD_FIELDS = (
    "securityContext",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "privileged",
    "capabilities",
    "runAsUser",
    "runAsNonRoot",
)
# Volume sources Kubernetes knows but a restricted pod may not use, or Conveyor does not offer.
FORBIDDEN_VOLUME_SOURCES = ("hostPath", "nfs", "iscsi", "glusterfs", "rbd", "cephfs", "flexVolume", "local")

# A Kubernetes object name (DNS-1123 subdomain), as Secrets, ConfigMaps and claims are named.
ObjectName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
]
EnvName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")]
# A label or annotation key: an optional DNS-subdomain prefix and a name.
MetadataKey = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=317,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    ),
]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]
AbsolutePath = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^/")]


class KeySelector(ApiModel):
    """One key of a Secret or ConfigMap in the Run's namespace."""

    name: ObjectName
    """Name of the Secret or ConfigMap."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """The key whose value is used."""
    optional: bool = False
    """Start the pod even if the object or key is missing (the variable is then unset)."""


@cel(
    "has(self.secretKeyRef) != has(self.configMapKeyRef)", "exactly one of secretKeyRef or configMapKeyRef must be set"
)
class EnvVarSource(ApiModel):
    """Where a variable's value comes from."""

    secret_key_ref: KeySelector | None = None
    """A key of a Secret."""
    config_map_key_ref: KeySelector | None = None
    """A key of a ConfigMap."""


@cel("!has(self.valueFrom) || !has(self.value) || self.value == ''", "value and valueFrom are exclusive")
class PodEnvVar(ApiModel):
    """An environment variable of the step's container: a literal value or a key of a Secret or ConfigMap."""

    name: EnvName
    """Variable name."""
    value: str = ""
    """Literal value (no templates; Kubernetes expands $(VAR) references to earlier variables)."""
    value_from: EnvVarSource | None = None
    """A key of a Secret or ConfigMap."""


class ObjectRef(ApiModel):
    """A whole Secret or ConfigMap in the Run's namespace."""

    name: ObjectName
    """Its name."""
    optional: bool = False
    """Start the pod even if it is missing."""


@cel("has(self.secretRef) != has(self.configMapRef)", "exactly one of secretRef or configMapRef must be set")
class EnvFromSource(ApiModel):
    """Every key of a Secret or ConfigMap as a variable."""

    prefix: Annotated[str, Field(max_length=253)] | None = None
    """Put before every key's name."""
    secret_ref: ObjectRef | None = None
    """A Secret."""
    config_map_ref: ObjectRef | None = None
    """A ConfigMap."""


class KeyToPath(ApiModel):
    """Project one key of a Secret or ConfigMap to a file."""

    key: Annotated[str, Field(min_length=1, max_length=253)]
    """The key."""
    path: Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^/]")]
    """Relative file path inside the mount."""
    mode: Annotated[int, Field(ge=0, le=0o777)] | None = None
    """File mode bits (decimal in JSON; 0o400 is 256)."""


class PersistentVolumeClaimSource(ApiModel):
    """An existing PersistentVolumeClaim."""

    claim_name: ObjectName
    """Name of the claim in the Run's namespace."""
    read_only: bool = False
    """Mount it read-only."""


class ConfigMapSource(ApiModel):
    """A ConfigMap's keys as files."""

    name: ObjectName
    """Name of the ConfigMap."""
    items: Annotated[list[KeyToPath], Field(max_length=256)] | None = None
    """Only these keys, at these paths (default: every key, named after it)."""
    default_mode: Annotated[int, Field(ge=0, le=0o777)] | None = None
    """File mode bits of the files."""
    optional: bool = False
    """Start the pod even if it is missing."""


class SecretSource(ApiModel):
    """A Secret's keys as files."""

    secret_name: ObjectName
    """Name of the Secret."""
    items: Annotated[list[KeyToPath], Field(max_length=256)] | None = None
    """Only these keys, at these paths (default: every key, named after it)."""
    default_mode: Annotated[int, Field(ge=0, le=0o777)] | None = None
    """File mode bits of the files."""
    optional: bool = False
    """Start the pod even if it is missing."""


class StorageMedium(StrEnum):
    DISK = ""
    MEMORY = "Memory"


class EmptyDirSource(ApiModel):
    """A scratch directory that lives as long as the pod."""

    medium: StorageMedium = StorageMedium.DISK
    """"" for the node's disk, Memory for tmpfs (counted against the step's memory)."""
    size_limit: Quantity | None = None
    """Most it may hold, e.g. 10Gi; the pod is evicted beyond it."""


_ONE_SOURCE = (
    "[has(self.persistentVolumeClaim), has(self.configMap), has(self.secret), has(self.emptyDir)]"
    ".filter(x, x).size() == 1"
)


@cel(_ONE_SOURCE, "exactly one of persistentVolumeClaim, configMap, secret or emptyDir must be set")
class Volume(ApiModel):
    """A volume of the step's pod; only the kinds a restricted pod may use."""

    name: DnsLabel
    """Name that volumeMounts refer to."""
    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    """An existing PersistentVolumeClaim."""
    config_map: ConfigMapSource | None = None
    """A ConfigMap's keys as files."""
    secret: SecretSource | None = None
    """A Secret's keys as files."""
    empty_dir: EmptyDirSource | None = None
    """Scratch space for the pod's lifetime."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_node_volumes(cls, data: Any) -> Any:
        """hostPath and friends reach into the node: say why they fail, rather than 'unknown field'."""
        if isinstance(data, dict):
            for source in FORBIDDEN_VOLUME_SOURCES:
                if source in data:
                    raise ValueError(f"{source} volumes are not allowed: {RESTRICTED}")
        return data


class VolumeMount(ApiModel):
    """Where a volume appears in the step's container."""

    __list_map_key__ = "mountPath"  # one volume may be mounted at several paths (subPath)

    name: DnsLabel
    """The volume (declared in volumes of the step or of the pipeline)."""
    mount_path: AbsolutePath
    """Absolute path in the container; not /tmp (the step's scratch) or the runtime's own paths."""
    sub_path: Annotated[str, Field(max_length=4096, pattern=r"^[^/]")] | None = None
    """Mount only this path inside the volume."""
    read_only: bool = False
    """Mount it read-only (ConfigMaps and Secrets always are)."""


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """Lets the pod run on nodes with a matching taint (e.g. GPU nodes)."""

    key: Annotated[str, Field(max_length=317)] | None = None
    """Taint key; empty with operator Exists matches every taint."""
    operator: TolerationOperator = TolerationOperator.EQUAL
    """Equal (key and value match) or Exists (the key alone)."""
    value: Annotated[str, Field(max_length=63)] | None = None
    """Taint value, for Equal."""
    effect: TaintEffect | None = None
    """The taint effect to tolerate (default: all)."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """NoExecute only: how long the pod stays after the taint appears."""


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


class SelectorRequirement(ApiModel):
    """key operator values, as in every Kubernetes selector."""

    key: Annotated[str, Field(min_length=1, max_length=317)]
    """Label (or field) key."""
    operator: SelectorOperator
    """In, NotIn, Exists, DoesNotExist (and Gt, Lt for nodes)."""
    values: list[Annotated[str, Field(max_length=317)]] = Field(default_factory=list, max_length=64)
    """Values for In, NotIn, Gt and Lt."""


class NodeSelectorTerm(ApiModel):
    """Requirements a node must all meet."""

    match_expressions: list[SelectorRequirement] = Field(default_factory=list, max_length=16)
    """On node labels."""
    match_fields: list[SelectorRequirement] = Field(default_factory=list, max_length=16)
    """On node fields (metadata.name)."""


class NodeSelector(ApiModel):
    """Terms of which a node must meet at least one."""

    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=16)
    """Alternatives, ORed."""


class PreferredSchedulingTerm(ApiModel):
    """A node preference with its weight."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """Weight among preferences."""
    preference: NodeSelectorTerm
    """The nodes preferred."""


class NodeAffinity(ApiModel):
    """Which nodes the pod may, or prefers to, run on."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    """Nodes the pod must run on."""
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=16
    )
    """Nodes the scheduler prefers."""


class LabelSelector(ApiModel):
    """Pods selected by labels."""

    # Keys unchecked here: a CEL key check this deep in lists costs the API server more than it allows; the
    # Job's admission checks them.
    match_labels: dict[Annotated[str, Field(max_length=317)], LabelValue] = Field(default_factory=dict, max_length=64)
    """Labels that must all be equal."""
    match_expressions: list[SelectorRequirement] = Field(default_factory=list, max_length=16)
    """Requirements that must all hold."""


class PodAffinityTerm(ApiModel):
    """Pods that must (or must not) run in the same topology domain."""

    label_selector: LabelSelector | None = None
    """The pods."""
    namespaces: list[DnsLabel] = Field(default_factory=list, max_length=64)
    """Their namespaces (default: the Run's)."""
    topology_key: Annotated[str, Field(min_length=1, max_length=317)]
    """The node label that defines a domain, e.g. kubernetes.io/hostname."""


class WeightedPodAffinityTerm(ApiModel):
    """A pod (anti-)affinity preference with its weight."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """Weight among preferences."""
    pod_affinity_term: PodAffinityTerm
    """The preference."""


class PodAffinity(ApiModel):
    """Run near (or away from) other pods."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=16
    )
    """Must hold."""
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=16
    )
    """Preferred."""


class Affinity(ApiModel):
    """Kubernetes' pod affinity: nodes, pods to run near, pods to run away from."""

    node_affinity: NodeAffinity | None = None
    """Which nodes."""
    pod_affinity: PodAffinity | None = None
    """Near which pods."""
    pod_anti_affinity: PodAffinity | None = None
    """Away from which pods."""


class LocalObjectReference(ApiModel):
    """An object in the Run's namespace, by name."""

    name: ObjectName
    """Its name."""


class PodSettings(ApiModel):
    """How a step's pod is set up on a cluster. In spec.pod they are every step's defaults; a step's own pod
    settings merge over them (see docs/pod-settings.md): lists by name (env, volumes, imagePullSecrets) or by
    mountPath, maps by key, tolerations added, affinity and the single names replaced."""

    env: list[PodEnvVar] = Field(default_factory=list, max_length=256)
    """Variables with a literal value or one from a Secret or ConfigMap key (valueFrom)."""
    env_from: list[EnvFromSource] = Field(default_factory=list, max_length=64)
    """Every key of a Secret or ConfigMap as a variable."""
    volumes: list[Volume] = Field(default_factory=list, max_length=64)
    """PersistentVolumeClaim, ConfigMap, Secret or emptyDir volumes."""
    volume_mounts: list[VolumeMount] = Field(default_factory=list, max_length=64)
    """Where the volumes appear in the step's container."""
    node_selector: dict[MetadataKey, LabelValue] = Field(default_factory=dict, max_length=64)
    """Node labels the pod's node must have."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    """Taints the pod tolerates."""
    affinity: Affinity | None = None
    """Node and pod (anti-)affinity."""
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    """Secrets with registry credentials for the step's image."""
    service_account_name: DnsLabel | None = None
    """The pod's service account (default: the operator's CONVEYOR_STEP_SERVICE_ACCOUNT, else the namespace's
    default). Its token is not mounted."""
    priority_class_name: ObjectName | None = None
    """PriorityClass of the pod."""
    labels: dict[MetadataKey, LabelValue] = Field(default_factory=dict, max_length=64)
    """Labels of the pod (not the conveyor.dev/ prefix: the operator's own)."""
    annotations: dict[MetadataKey, Annotated[str, Field(max_length=65536)]] = Field(default_factory=dict, max_length=64)
    """Annotations of the pod (not the conveyor.dev/ prefix)."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_privileged(cls, data: Any) -> Any:
        """A securityContext or host namespace would weaken every step pod: say so by name."""
        if isinstance(data, dict):
            for key in FORBIDDEN_POD_FIELDS:
                if key in data:
                    raise ValueError(f"{key} is not allowed: {RESTRICTED}, set by the operator")
        return data


def _by(items: list[Any], key: str, override: list[Any]) -> list[Any]:
    """`items` with those of `override` replacing the ones with the same key, new ones appended in order."""
    replaced = {getattr(i, key): i for i in override}
    merged = [replaced.pop(getattr(i, key), i) for i in items]
    return merged + [i for i in override if getattr(i, key) in replaced]


def merge_pod_settings(defaults: PodSettings | None, step: PodSettings | None) -> PodSettings:
    """A step's effective pod settings: its own over the pipeline's (spec.pod)."""
    base, over = defaults or PodSettings(), step or PodSettings()
    tolerations = list(base.tolerations) + [t for t in over.tolerations if t not in base.tolerations]
    env_from = list(base.env_from) + [e for e in over.env_from if e not in base.env_from]
    return PodSettings(
        env=_by(base.env, "name", over.env),
        env_from=env_from,
        volumes=_by(base.volumes, "name", over.volumes),
        volume_mounts=_by(base.volume_mounts, "mount_path", over.volume_mounts),
        node_selector={**base.node_selector, **over.node_selector},
        tolerations=tolerations,
        affinity=over.affinity if over.affinity is not None else base.affinity,
        image_pull_secrets=_by(base.image_pull_secrets, "name", over.image_pull_secrets),
        service_account_name=over.service_account_name or base.service_account_name,
        priority_class_name=over.priority_class_name or base.priority_class_name,
        labels={**base.labels, **over.labels},
        annotations={**base.annotations, **over.annotations},
    )
