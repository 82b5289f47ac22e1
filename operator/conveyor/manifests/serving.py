"""The objects a ModelDeployment owns: Deployments (stable, canary), Service, HPA, PDB, ServiceMonitor.

Names: the stable Deployment, Service, HPA, PDB and ServiceMonitor are named after the
ModelDeployment; the canary Deployment gets `-canary`. Pods of both tracks carry the
ModelDeployment's label, which is all the Service selects, so traffic follows ready replicas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor.api.modeldeployment import ModelDeploymentSpec, ServedModel
from conveyor.core.rollout import version_of
from conveyor.manifests.job import CONTAINER_SECURITY, POD_SECURITY, owner_reference
from conveyor.manifests.names import (
    ANNOTATION_MODEL_DIGEST,
    ANNOTATION_MODEL_URI,
    LABEL_MANAGED,
    LABEL_MODEL_DEPLOYMENT,
    LABEL_MODEL_VERSION,
    LABEL_TRACK,
    MANAGER,
)

STABLE = "stable"
CANARY = "canary"
# Seconds a stopping server keeps answering after it turns unready, so endpoints drop it first.
DRAIN_SECONDS = 5


def deployment_name(md: str, track: str) -> str:
    return md if track == STABLE else f"{md}-{CANARY}"


def _meta(md: dict[str, Any], name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta = md["metadata"]
    labels = {LABEL_MODEL_DEPLOYMENT: meta["name"], LABEL_MANAGED: MANAGER, **(extra_labels or {})}
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": labels,
        "ownerReferences": [owner_reference("ModelDeployment", meta["name"], meta["uid"])],
    }


def monitoring_uri(bucket: str, prefix: str, namespace: str, md: str) -> str:
    """Where the servers of a ModelDeployment log sampled predictions and fed-back labels."""
    return f"s3://{bucket}/{prefix}monitoring/{namespace}/{md}"


@dataclass(frozen=True)
class ServerSettings:
    """The operator's side of a server pod: image, entrypoint, store access."""

    image: str
    command: list[str]
    credentials_secret: str | None
    s3_endpoint: str | None
    monitoring: str | None
    """Where sampled predictions and fed-back labels go."""


def server_deployment(
    md: dict[str, Any],
    spec: ModelDeploymentSpec,
    model: ServedModel,
    settings: ServerSettings,
    *,
    track: str,
    replicas: int,
) -> dict[str, Any]:
    """A Deployment of model servers for one track; rolling updates never take a ready replica away."""
    image, command, credentials_secret = settings.image, settings.command, settings.credentials_secret
    s3_endpoint, monitoring = settings.s3_endpoint, settings.monitoring
    name = md["metadata"]["name"]
    port = spec.server.port
    selector = {LABEL_MODEL_DEPLOYMENT: name, LABEL_TRACK: track}
    pod_labels = {**selector, LABEL_MODEL_VERSION: version_of(model.digest), LABEL_MANAGED: MANAGER}
    args = [
        "--model-name", name,
        "--model-uri", model.uri,
        "--model-digest", model.digest,
        "--port", str(port),
        "--work-dir", "/tmp",  # noqa: S108 - an emptyDir; the root filesystem is read-only
        "--drain-seconds", str(DRAIN_SECONDS),
    ]  # fmt: skip
    if s3_endpoint:
        args += ["--s3-endpoint", s3_endpoint]
    if monitoring:
        rate = spec.monitoring.prediction_sample_rate if spec.monitoring else 0.1
        args += ["--monitoring-uri", monitoring, "--prediction-sample-rate", str(rate)]
    env: list[dict[str, Any]] = [
        {"name": "TMPDIR", "value": "/tmp"},  # noqa: S108
        {"name": "HOME", "value": "/tmp"},  # noqa: S108
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if credentials_secret:
        env += [
            {"name": var, "valueFrom": {"secretKeyRef": {"name": credentials_secret, "key": key}}}
            for var, key in (("AWS_ACCESS_KEY_ID", "accessKey"), ("AWS_SECRET_ACCESS_KEY", "secretKey"))
        ]
    resources: dict[str, Any] = {}
    amounts = {k: v for k, v in (("cpu", spec.server.cpu), ("memory", spec.server.memory)) if v}
    if amounts:
        resources = {"requests": dict(amounts), "limits": dict(amounts)}
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.server.image or image,
        "command": [*command, *args],
        "env": env,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": f"/v2/models/{name}/ready", "port": port},
            "periodSeconds": 2,
            "failureThreshold": 1,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": port},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 5,
        },
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],  # noqa: S108
    }
    if resources:
        container["resources"] = resources
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(md, deployment_name(name, track), {LABEL_TRACK: track}),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {ANNOTATION_MODEL_DIGEST: model.digest, ANNOTATION_MODEL_URI: model.uri},
                },
                "spec": {
                    "securityContext": POD_SECURITY,
                    "containers": [container],
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": DRAIN_SECONDS + 25,
                },
            },
        },
    }
    return manifest


def service(md: dict[str, Any], spec: ModelDeploymentSpec) -> dict[str, Any]:
    name = md["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(md, name),
        "spec": {
            "selector": {LABEL_MODEL_DEPLOYMENT: name},
            "ports": [{"name": "http", "port": 80, "targetPort": spec.server.port, "protocol": "TCP"}],
        },
    }


def autoscaler(md: dict[str, Any], spec: ModelDeploymentSpec) -> dict[str, Any]:
    """autoscaling/v2 HPA on the stable Deployment: CPU, and a per-pod custom metric when asked."""
    name = md["metadata"]["name"]
    a = spec.autoscaling
    cpu_target = {"type": "Utilization", "averageUtilization": a.target_cpu_utilization}
    metrics: list[dict[str, Any]] = [{"type": "Resource", "resource": {"name": "cpu", "target": cpu_target}}]
    if a.custom_metric is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": a.custom_metric.name},
                    "target": {"type": "AverageValue", "averageValue": a.custom_metric.target_average_value},
                },
            }
        )
    hpa_spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(name, STABLE)},
        "minReplicas": a.min_replicas,
        "maxReplicas": a.max_replicas,
        "metrics": metrics,
    }
    if a.behavior is not None:
        hpa_spec["behavior"] = a.behavior.to_wire()
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(md, name),
        "spec": hpa_spec,
    }


def disruption_budget(md: dict[str, Any]) -> dict[str, Any]:
    """At most one replica away at a time through voluntary disruptions (drains, upgrades)."""
    name = md["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(md, name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {LABEL_MODEL_DEPLOYMENT: name}}},
    }


def service_monitor(md: dict[str, Any]) -> dict[str, Any]:
    """For the Prometheus operator: scrape every server pod's /metrics."""
    name = md["metadata"]["name"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(md, name),
        "spec": {
            "selector": {"matchLabels": {LABEL_MODEL_DEPLOYMENT: name, LABEL_MANAGED: MANAGER}},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }
