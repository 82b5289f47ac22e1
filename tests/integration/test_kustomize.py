"""The kustomize base in deploy/kustomize/base and the GitOps example in examples/gitops: they render
with the pinned kubectl, the base is the Helm chart's defaults object for object, and everything a
sync would apply passes a server-side dry-run on the real API server with Conveyor's CRDs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.cli.documents import load_documents
from conveyor.controller.config import OperatorConfig, load_config
from testenv.binaries import Binaries
from testenv.controlplane import ControlPlane

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kustomize" / "base"
GITOPS = ROOT / "examples" / "gitops"
CHART = ROOT / "charts" / "conveyor"
OVERLAYS = [
    GITOPS / "platform" / "overlays" / "staging",
    GITOPS / "platform" / "overlays" / "production",
    GITOPS / "ml" / "overlays" / "staging",
    GITOPS / "ml" / "overlays" / "production",
]
CONVEYOR_KINDS = {"Pipeline", "Run", "ModelDeployment"}
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def binaries() -> Binaries:
    return Binaries.locate()


def kustomize(binaries: Binaries, directory: Path) -> list[Doc]:
    done = subprocess.run(
        [str(binaries.kubectl), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("TMPDIR", "/tmp")},
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def in_namespace(directory: Path, namespace: str, tmp_path: Path) -> Path:
    """An overlay of `directory` that moves everything into `namespace`, as a user's overlay would."""
    overlay = tmp_path / f"overlay-{directory.parent.parent.name}-{directory.name}"
    overlay.mkdir()
    doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [os.path.relpath(directory, overlay)],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(doc))
    return overlay


def dry_run(cp: ControlPlane, docs: list[Doc], namespace: str, path: Path) -> None:
    """Server-side apply, dry run: schemas, CEL rules, admission (Pod Security warnings count as failures)."""
    path.write_text(yaml.safe_dump_all(docs))
    done = cp.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-n", namespace, "-f", str(path),
        check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{path.name}:\n{done.stderr}"
    assert "Warning" not in done.stderr, done.stderr
    applied = [line for line in done.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(docs), done.stdout


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def operator_env(docs: list[Doc]) -> dict[str, str]:
    (deployment,) = by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


# ------------------------------------------------------------------ the base


def test_base_crds_are_the_generated_ones() -> None:
    copies = sorted(p.name for p in (BASE / "crds").iterdir())
    assert copies == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    for name in copies:
        assert (BASE / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"deploy/kustomize/base/crds/{name} is stale: copy crds/{name} over it"
        )


def test_base_is_the_charts_defaults(binaries: Binaries, tmp_path: Path) -> None:
    docs = kustomize(binaries, BASE)
    crds = by_kind(docs, "CustomResourceDefinition")
    generated = [d for p in sorted((ROOT / "crds").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert sorted(c["metadata"]["name"] for c in crds) == sorted(c["metadata"]["name"] for c in generated)
    (namespace,) = by_kind(docs, "Namespace")
    assert namespace["metadata"]["name"] == "conveyor-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    helm_home = tmp_path / "helm"
    done = subprocess.run(
        [str(binaries.helm), "template", "conveyor", str(CHART), "--namespace", "conveyor-system"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(helm_home), "HELM_CACHE_HOME": str(helm_home / "cache"),
             "HELM_CONFIG_HOME": str(helm_home / "config"), "HELM_DATA_HOME": str(helm_home / "data")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    chart = []
    for doc in (d for d in yaml.safe_load_all(done.stdout) if d):
        for label in HELM_ONLY_LABELS:
            doc["metadata"]["labels"].pop(label)
        if doc["kind"] == "Deployment":
            del doc["spec"]["template"]["metadata"]["annotations"]["checksum/credentials"]
            if not doc["spec"]["template"]["metadata"]["annotations"]:
                del doc["spec"]["template"]["metadata"]["annotations"]
        chart.append(doc)
    rest = [d for d in docs if d["kind"] not in ("CustomResourceDefinition", "Namespace")]

    def key(d: Doc) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    assert sorted(map(key, rest)) == sorted(map(key, chart))
    for ours, theirs in zip(sorted(rest, key=key), sorted(chart, key=key), strict=True):
        assert ours == theirs, f"{key(ours)} differs from the chart's defaults"


def test_base_is_patchable_and_passes_a_server_side_dry_run(
    binaries: Binaries, control_plane: ControlPlane, install_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    control_plane.kubectl(
        "label", "namespace", namespace,
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    overlay = in_namespace(BASE, namespace, tmp_path)
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["images"] = [
        {"name": "ghcr.io/conveyor-dev/conveyor-operator", "newName": "registry.example/conveyor", "newTag": "9.9"}
    ]
    settings = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "conveyor"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "operator",
                            "env": [
                                {"name": "CONVEYOR_S3_ENDPOINT", "value": "http://minio.minio.svc:9000"},
                                {"name": "CONVEYOR_NAMESPACES", "value": '["team-a"]'},
                            ],
                        }
                    ]
                }
            }
        },
    }
    kustomization["patches"] = [{"patch": yaml.safe_dump(settings)}]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    docs = kustomize(binaries, overlay)

    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/conveyor:9.9"
    config = load_config(operator_env(docs))
    assert config.s3_endpoint == "http://minio.minio.svc:9000" and config.namespaces == ["team-a"]
    assert config.s3_bucket == OperatorConfig().s3_bucket  # the settings not patched keep their defaults
    # Every namespaced object, the Namespace itself and the RBAC subjects follow the overlay's namespace.
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "Service", "Deployment"):
            assert doc["metadata"]["namespace"] == namespace, doc["kind"]
        for subject in doc.get("subjects", []):
            assert subject["namespace"] == namespace, doc["metadata"]["name"]
    assert [n["metadata"]["name"] for n in by_kind(docs, "Namespace")] == [namespace]
    dry_run(control_plane, docs, namespace, tmp_path / "base.yaml")


# ------------------------------------------------------------------ the GitOps example


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: f"{p.parent.parent.name}-{p.name}")
def test_gitops_overlay_renders_and_passes_a_server_side_dry_run(
    binaries: Binaries,
    control_plane: ControlPlane,
    install_crds: list[str],
    namespace: str,
    tmp_path: Path,
    overlay: Path,
) -> None:
    docs = kustomize(binaries, overlay)
    assert not by_kind(docs, "Run"), "Runs must not be in a synced path (a sync would start them again)"
    if overlay.parent.parent.name == "platform":
        load_config(operator_env(docs))  # the operator accepts the overlay's settings
    else:
        ours = [d for d in docs if d["kind"] in CONVEYOR_KINDS]
        assert {d["kind"] for d in ours} == {"Pipeline", "ModelDeployment"}
        assert {d["metadata"]["namespace"] for d in docs} == {f"ml-{overlay.name}"}
        # The operator's own validation (DAG, templates, component parameters), beyond the CRD schema.
        path = tmp_path / "conveyor-documents.yaml"
        path.write_text(yaml.safe_dump_all(ours))
        assert {d.kind for d in load_documents(path)} == {"Pipeline", "ModelDeployment"}
    dry_run(control_plane, kustomize(binaries, in_namespace(overlay, namespace, tmp_path)), namespace, tmp_path / "x")


def test_gitops_syncs_only_the_overlays_and_never_runs() -> None:
    synced: list[str] = []
    for path in [*(GITOPS / "argocd").glob("*.yaml"), *(GITOPS / "flux").glob("*.yaml")]:
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            if doc["kind"] == "Application":
                synced.append(doc["spec"]["source"]["path"])
            elif doc["kind"] == "ApplicationSet":
                synced.append(doc["spec"]["template"]["spec"]["source"]["path"])
            elif doc["kind"] == "Kustomization":
                synced.append(doc["spec"]["path"].removeprefix("./"))
    assert synced
    for path in synced:
        assert path.startswith(("platform/overlays/", "ml/overlays/")), path
        assert "runs" not in path.split("/"), path
    ml = [p for p in synced if p.startswith("ml/")]
    assert {p.replace("{{ .env }}", e) for p in ml for e in ("staging", "production")} >= {
        "ml/overlays/staging",
        "ml/overlays/production",
    }


def test_run_templates_use_generate_name_and_are_accepted(
    control_plane: ControlPlane, install_crds: list[str], namespace: str
) -> None:
    templates = sorted((GITOPS / "runs").glob("*.yaml"))
    assert templates
    for path in templates:
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            assert doc["kind"] == "Run", path
            assert "name" not in doc["metadata"] and doc["metadata"]["generateName"].endswith("-"), path
        # `kubectl create` twice: two Runs with two names, never a conflict.
        names = set()
        for _ in range(2):
            done = control_plane.kubectl("create", "-n", namespace, "-o", "name", "-f", str(path))
            names.add(done.stdout.strip())
        assert len(names) == 2 and all(n.startswith("run.conveyor.dev/breast-cancer-") for n in names), names
        # `kubectl apply` refuses it: a sync tool cannot apply it by mistake and start a Run each time.
        refused = control_plane.kubectl("apply", "-n", namespace, "-f", str(path), check=False)
        assert refused.returncode != 0
