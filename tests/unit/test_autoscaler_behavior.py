"""A ModelDeployment's autoscaling.behavior reaches its HorizontalPodAutoscaler as autoscaling/v2 spells it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.api.modeldeployment import ModelDeploymentSpec
from conveyor.manifests import serving

MODEL = {"uri": "s3://b/m", "digest": "sha256:" + "b" * 64}
MD = {"apiVersion": "conveyor.dev/v1alpha1", "kind": "ModelDeployment",
      "metadata": {"name": "m", "namespace": "ns", "uid": "u1"}}  # fmt: skip

FAST = {
    "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 5}]},
    "scaleDown": {
        "stabilizationWindowSeconds": 10,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}],
    },
}


def hpa(autoscaling: dict[str, Any]) -> dict[str, Any]:
    spec = ModelDeploymentSpec.model_validate({"model": MODEL, "autoscaling": autoscaling})
    return serving.autoscaler(MD, spec)


def test_behavior_is_passed_to_the_hpa_as_given() -> None:
    out = hpa({"minReplicas": 1, "maxReplicas": 3, "behavior": FAST})
    assert out["spec"]["behavior"] == FAST
    assert (out["spec"]["minReplicas"], out["spec"]["maxReplicas"]) == (1, 3)


def test_one_direction_only_leaves_the_other_to_kubernetes_defaults() -> None:
    out = hpa({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}})
    assert out["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 30}}


def test_without_behavior_the_hpa_has_none() -> None:
    assert "behavior" not in hpa({"minReplicas": 1, "maxReplicas": 3})["spec"]


@pytest.mark.parametrize(
    "behavior",
    [
        {"scaleUp": {"stabilizationWindowSeconds": 3601}},
        {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 5}]}},
        {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1801}]}},
        {"scaleDown": {"policies": [{"type": "Replicas", "value": 1, "periodSeconds": 5}]}},
        {"scaleDown": {"selectPolicy": "Fastest"}},
        {"scaleSideways": {}},
    ],
)
def test_behavior_out_of_the_hpa_bounds_is_refused(behavior: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        hpa({"behavior": behavior})
