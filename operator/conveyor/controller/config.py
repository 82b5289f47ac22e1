"""The operator's settings: one object, read from the environment once at start-up and validated."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PREFIX = "CONVEYOR_"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


class OperatorConfig(BaseModel):
    """Every setting, its default, and what it is for (documented in README's operator section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s3_endpoint: str | None = None
    """URL of the S3-compatible store (unset: AWS S3)."""
    s3_bucket: Annotated[str, Field(min_length=3)] = "conveyor"
    """Bucket for artifacts, cache entries and run records."""
    s3_prefix: str = ""
    """Key prefix inside the bucket."""
    credentials_secret: str | None = "conveyor-artifacts"  # noqa: S105 - the name of a Secret, not a value
    """Secret (keys accessKey, secretKey) mounted into step pods; the operator reads its own from AWS_* variables."""
    step_image: str = "ghcr.io/conveyor-dev/conveyor-step:0.1.0"
    """Image that runs built-in components."""
    step_command: list[str] = Field(default_factory=lambda: ["python", "-m", "conveyor.runtime"])
    """Entrypoint of the step runtime inside step images (JSON list)."""
    server_image: str = "ghcr.io/conveyor-dev/conveyor-server:0.1.0"
    """Default model-server image of ModelDeployments (spec.server.image overrides it)."""
    server_command: list[str] = Field(default_factory=lambda: ["python", "-m", "conveyor.serving"])
    """Entrypoint of the model server inside server images (JSON list)."""
    step_service_account: str | None = None
    """ServiceAccount for step pods (none: the namespace default, with no token mounted)."""
    namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch (JSON list, or comma-separated); empty: all namespaces."""
    resync_seconds: Annotated[float, Field(gt=0)] = 10.0
    """An unfinished Run's resync, in case an event was missed: this long after a pass that acted, doubling up to
    6x while passes find nothing to do (retries' backoff and timeouts are kept to their own times)."""
    pod_start_timeout_seconds: Annotated[float, Field(ge=0)] = 1800.0
    """How long a step's pod may take to start before its attempt fails (a ResourceQuota refusing pods, an image
    that cannot be pulled, nowhere to schedule), unless the step sets startTimeoutSeconds; 0: no limit."""
    resource_poll_seconds: Annotated[float, Field(gt=0)] = 5.0
    """How often a Run reads the objects of its running resource steps: nothing watches their kinds, so a pass
    looks at least this often while one runs."""
    resource_kinds: list[str] = Field(default_factory=list)
    """The kinds resource steps may create, as GROUP/RESOURCE pairs (`ray.io/rayjobs`; JSON list, or comma-separated),
    from the chart's resourceSteps.allowed; empty: none. Any other kind is refused before it is created."""
    reconcile_workers: Annotated[int, Field(ge=1, le=256)] = 32
    """Run passes in flight at once. Each mostly waits for the API server: at 200 concurrent Runs on 2 cores, 32 workers
    gave a quarter of the per-step overhead p99 of 8 (BENCHMARKS.md)."""
    artifact_gc_interval_seconds: Annotated[float, Field(ge=0)] = 3600.0
    """How often artifacts nothing references are collected (0: never; `conveyor gc` still works by hand)."""
    artifact_gc_grace_seconds: Annotated[float, Field(ge=0)] = 86400.0
    """How long an artifact stays unreferenced (marked in the store) before it is deleted."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """Prometheus metrics port (0: off)."""
    health_port: Annotated[int, Field(ge=0, le=65535)] = 8081
    """Liveness endpoint /healthz (0: off)."""
    peering: str | None = "conveyor"
    """kopf peering object through which replicas agree which one is active (unset or --standalone: no HA)."""
    peering_priority: Annotated[int, Field(ge=0, le=2**31)] | None = None
    """This replica's priority; the highest live one works, the others stand by (default: random)."""
    peering_lifetime_seconds: Annotated[int, Field(ge=5, le=3600)] = 15
    """How long a silent replica counts as alive: the fail-over time after the active one dies."""

    @field_validator("resource_kinds")
    @classmethod
    def _group_resource(cls, v: list[str]) -> list[str]:
        for item in v:
            _, slash, resource = item.partition("/")
            if not slash or not resource or "/" in resource or "*" in item:
                raise ValueError(f"{item!r} is not GROUP/RESOURCE (e.g. ray.io/rayjobs)")
        return v

    @field_validator("step_command", "server_command")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must name at least the program")
        return v


def _parse_list(raw: str) -> list[str]:
    raw = raw.strip()
    if raw.startswith("["):
        value = json.loads(raw)
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ValueError("expected a JSON list of strings")
        return value
    return [x.strip() for x in raw.split(",") if x.strip()]


def load_config(environ: Mapping[str, str] | None = None) -> OperatorConfig:
    """Settings from CONVEYOR_* variables; raises ConfigError naming the variable on bad input."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, field in OperatorConfig.model_fields.items():
        var = PREFIX + name.upper()
        if var not in env:
            continue
        raw = env[var]
        try:
            if field.annotation in (list[str],):
                values[name] = _parse_list(raw)
            else:
                values[name] = raw if raw != "" else None
        except ValueError as e:
            raise ConfigError(f"{var}: {e}") from None
    try:
        return OperatorConfig.model_validate(values)
    except ValidationError as e:
        problems = "; ".join(f"{PREFIX}{str(err['loc'][0]).upper()}: {err['msg']}" for err in e.errors())
        raise ConfigError(problems) from None
