"""The SDK's pod settings: pipeline defaults and a step's own reach the compiled YAML, and a mistake in them is
named at its line in Python."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from conveyor.sdk.compiler import load, to_yaml
from conveyor.sdk.errors import PipelineError


def test_pod_settings_compile_to_spec_pod_and_steps_pod(tmp_path: Path) -> None:
    source = tmp_path / "pods.py"
    source.write_text(
        textwrap.dedent("""
        from conveyor import sdk

        @sdk.pipeline(pod={"nodeSelector": {"pool": "gpu"}, "volumes": [{"name": "data",
                      "persistentVolumeClaim": {"claimName": "datasets"}}]})
        def pods() -> None:
            sdk.step("train", image="trainer:1", command=["python", "train.py"],
                     resources=sdk.Resources(gpu=1),
                     pod=sdk.PodSettings.model_validate({
                         "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}}],
                         "volumeMounts": [{"name": "data", "mountPath": "/data"}]}))
        """)
    )
    pipeline = load(f"{source}:pods")
    assert pipeline.spec.pod is not None and pipeline.spec.pod.node_selector == {"pool": "gpu"}
    doc = yaml.safe_load(to_yaml(pipeline))
    step = doc["spec"]["steps"][0]
    assert step["pod"]["env"][0]["valueFrom"] == {"secretKeyRef": {"name": "hub", "key": "token"}}  # defaults left out
    assert step["pod"]["volumeMounts"][0]["mountPath"] == "/data"
    assert doc["spec"]["pod"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "datasets"


def test_a_mount_of_an_undeclared_volume_is_named_at_its_line(tmp_path: Path) -> None:
    source = tmp_path / "badmount.py"
    source.write_text(
        textwrap.dedent("""
        from conveyor import sdk

        @sdk.pipeline
        def badmount() -> None:
            sdk.step("train", image="trainer:1", command=["true"],
                     pod={"volumeMounts": [{"name": "nowhere", "mountPath": "/data"}]})
        """)
    )
    with pytest.raises(PipelineError) as e:
        load(f"{source}:badmount")
    text = str(e.value)
    assert "badmount.py:6" in text and "spec.steps[0].pod.volumeMounts[0].name" in text, text
    assert "mounts volume 'nowhere'" in text, text
