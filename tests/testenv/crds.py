"""Applying CustomResourceDefinitions to the test cluster (test harness code).

Uses kubectl server-side apply (large generated schemas overflow the client-side
last-applied annotation) and then waits until every CRD reports Established, so a test
that creates a custom object right after never races the apiserver.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client

from testenv.binaries import REPO_ROOT
from testenv.controlplane import ControlPlane
from testenv.processes import wait_until

CRD_DIR = REPO_ROOT / "crds"


def crd_files(directory: Path = CRD_DIR) -> list[Path]:
    """Every CRD manifest in ``directory``; an error if there is none (never a silent skip)."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(
            f"no CRD manifests in {directory}: they are generated from the pydantic models in "
            "operator/conveyor/api (see the Makefile); generate them before running these tests"
        )
    return files


def crd_names(files: Iterable[Path]) -> list[str]:
    """metadata.name of every CustomResourceDefinition document in ``files``."""
    names = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                names.append(str(doc["metadata"]["name"]))
    return names


def _established(cp: ControlPlane, name: str) -> bool:
    with cp.api_client() as api:
        crd: Any = k8s_client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def apply_crds(cp: ControlPlane, files: list[Path], timeout: float = 60) -> list[str]:
    """Apply ``files`` and wait for each CRD to be Established; returns the CRD names."""
    names = crd_names(files)
    if not names:
        raise ValueError(f"no CustomResourceDefinition documents in {[str(f) for f in files]}")
    # Apply every file before reporting, so one invalid CRD does not hide the state of the others.
    rejected = []
    for path in files:
        done = cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path), check=False)
        if done.returncode != 0:
            rejected.append(f"{path.name}: {done.stderr.strip()}")
    if rejected:
        raise RuntimeError("the apiserver rejected CRD manifests:\n" + "\n".join(rejected))
    for name in names:
        wait_until(partial(_established, cp, name), timeout=timeout, what=f"CRD {name} Established")
    return names
