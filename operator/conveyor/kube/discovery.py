"""Which resources the API server serves right now (discovery needs no RBAC grant)."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

# What the operator cannot work without: kopf decides once, at start-up, which resources it can watch,
# and a resource missing then (an API server still initialising) is never watched by that process.
ESSENTIAL: tuple[tuple[str, str], ...] = (
    ("v1", "pods"),
    ("batch/v1", "jobs"),
    ("conveyor.dev/v1alpha1", "runs"),
    ("conveyor.dev/v1alpha1", "pipelines"),
    ("conveyor.dev/v1alpha1", "modeldeployments"),
)


def missing_resources(api: client.ApiClient, wanted: tuple[tuple[str, str], ...] = ESSENTIAL) -> list[str]:
    """`group/version plural` of each wanted resource the API server does not list (yet)."""
    served: dict[str, set[str]] = {}
    missing = []
    for group_version, plural in wanted:
        if group_version not in served:
            try:
                if group_version == "v1":
                    found: Any = client.CoreV1Api(api).get_api_resources()
                else:
                    group, version = group_version.split("/")
                    found = client.CustomObjectsApi(api).get_api_resources(group, version)
                served[group_version] = {r.name for r in found.resources or []}
            except ApiException as e:
                if e.status not in (404, 429, 500, 503):
                    raise
                served[group_version] = set()
        if plural not in served[group_version]:
            missing.append(f"{group_version} {plural}")
    return missing
