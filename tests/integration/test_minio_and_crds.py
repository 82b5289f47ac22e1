"""MinIO serves S3 and the cluster serves CRD schemas to kubectl."""

from __future__ import annotations

from pathlib import Path

import pytest

from testenv.controlplane import ControlPlane
from testenv.crds import apply_crds
from testenv.minio import S3Endpoint
from testenv.processes import wait_until

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"


def test_boto3_puts_and_gets_an_object(minio: S3Endpoint) -> None:
    s3 = minio.client()
    try:
        s3.put_object(Bucket=minio.bucket, Key="dir/hello.txt", Body=b"hello minio")
        assert s3.get_object(Bucket=minio.bucket, Key="dir/hello.txt")["Body"].read() == b"hello minio"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=minio.bucket, Prefix="dir/")["Contents"]]
        assert keys == ["dir/hello.txt"]
    finally:
        s3.close()


def test_kubectl_explain_builtin(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl("explain", "jobs.spec.backoffLimit").stdout
    assert "Specifies the number of retries" in out


def _explain_when_published(cp: ControlPlane, field: str) -> str:
    """CRD schemas reach the OpenAPI document shortly after Established; poll until kubectl sees them."""

    def explain() -> str | None:
        done = cp.kubectl("explain", field, check=False)
        return done.stdout if done.returncode == 0 else None

    return str(wait_until(explain, timeout=30, what=f"kubectl explain {field}", interval=0.5))


def test_apply_crds_waits_for_established(control_plane: ControlPlane) -> None:
    names = apply_crds(control_plane, [DATA / "widgets-crd.yaml"])
    assert names == ["widgets.testenv.conveyor.dev"]
    out = _explain_when_published(control_plane, "widgets.spec.size")
    assert "How many sprockets the widget carries." in out


def test_kubectl_explain_pipeline_steps(control_plane: ControlPlane, install_crds: list[str]) -> None:
    assert any(name.startswith("pipelines.") for name in install_crds)
    out = _explain_when_published(control_plane, "pipelines.spec.steps")
    assert "DESCRIPTION:" in out
    description = out.split("DESCRIPTION:", 1)[1].split("FIELDS:", 1)[0].strip()
    assert description and description != "<empty>"
