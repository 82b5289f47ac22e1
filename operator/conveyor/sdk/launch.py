"""Running a Python pipeline: on this machine through the local runner, or as a Run on a cluster.

Both go the way the CLI goes (`conveyor run`, and the Run object `conveyor rerun` creates), so a pipeline
run from a notebook is checked, cached and recorded exactly like one run from its YAML.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.api.pipeline import Pipeline
from conveyor.core.support import LOCAL, OPERATOR, unsupported
from conveyor.core.validation import InvalidSpec, Issue, parse_document, resolve_parameters

if TYPE_CHECKING:
    from conveyor.local.runner import RunOutcome

LABEL_SDK_PIPELINE = "conveyor.dev/sdk-pipeline"
"""The pipeline a Run submitted from Python carries inline: `kubectl get runs -l conveyor.dev/sdk-pipeline=NAME`.
(Not conveyor.dev/pipeline: that one marks the Runs a Pipeline object's schedule owns and prunes.)"""
FINISHED = ("Succeeded", "Failed", "Cancelled")


class RunCreator(Protocol):
    """What submitting needs of a cluster (conveyor.kube.cluster.Cluster has it)."""

    def create_run(self, run: dict[str, Any]) -> bool: ...

    def create_generated_run(self, run: dict[str, Any]) -> str: ...

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...


def _parameters(pipeline: Pipeline, given: Mapping[str, Any] | None, shell: str) -> dict[str, Any]:
    values, issues = resolve_parameters(pipeline.spec, dict(given or {}))
    issues += unsupported(pipeline.spec, shell)
    if issues:
        raise InvalidSpec(issues, f"pipeline {pipeline.metadata['name']}")
    return values


def run_local(
    pipeline: Pipeline,
    parameters: Mapping[str, Any] | None = None,
    *,
    state_dir: Path | str = ".conveyor",
    parallelism: int | None = None,
    progress: bool = True,
    env_file: Path | str | None = None,
) -> RunOutcome:
    """Run on this machine as `conveyor run` does (same store, cache and records under `state_dir`). `env_file` is
    `conveyor run --env-file`: dotenv lines giving the steps' pod.env valueFrom variables by name."""
    from rich.console import Console  # noqa: PLC0415

    from conveyor.lifecycle.specs import store_spec  # noqa: PLC0415
    from conveyor.local.env_file import read_env_file  # noqa: PLC0415
    from conveyor.local.view import run_with_progress  # noqa: PLC0415
    from conveyor.storage.local import LocalStore  # noqa: PLC0415

    values = _parameters(pipeline, parameters, LOCAL)
    env, issues = read_env_file(Path(env_file) if env_file is not None else None, pipeline.spec)
    if issues:
        raise InvalidSpec(issues, f"pipeline {pipeline.metadata['name']}")
    state = Path(state_dir)
    name = str(pipeline.metadata["name"])
    store_spec(LocalStore(state.resolve() / "store"), pipeline.spec, name)  # for `conveyor rerun`
    with _this_python_first(pipeline):
        return run_with_progress(
            pipeline.spec,
            values,
            pipeline_name=name,
            state_dir=state,
            parallelism=parallelism,
            console=Console(),
            live=progress,
            env_file=env,
        )


@contextlib.contextmanager
def _this_python_first(pipeline: Pipeline) -> Iterator[None]:
    """A function step runs `python -m conveyor.sdk.function_runtime`: in the image that is the image's Python;
    here it must be this one (a notebook's kernel often runs a virtualenv that is not on PATH)."""
    from conveyor.sdk.functions import RUNTIME_MODULE  # noqa: PLC0415

    functions = any(
        s.container is not None and s.container.command[:3] == ["python", "-m", RUNTIME_MODULE]
        for s in pipeline.spec.all_steps()  # an onExit function step needs this Python as much
    )
    before = os.environ.get("PATH")
    if functions:
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *([before] if before else [])])
    try:
        yield
    finally:
        if functions:
            if before is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = before


def run_object(
    pipeline: Pipeline,
    parameters: Mapping[str, Any] | None = None,
    *,
    namespace: str = "default",
    name: str | None = None,
) -> dict[str, Any]:
    """The Run object that submits `pipeline` with its spec inline (named `name`, or by the API server from
    the pipeline's name), checked as `conveyor validate` checks a Run."""
    _parameters(pipeline, parameters, OPERATOR)
    pipeline_name = str(pipeline.metadata["name"])
    metadata: dict[str, Any] = {"namespace": namespace, "labels": {LABEL_SDK_PIPELINE: pipeline_name}}
    if name is not None:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{pipeline_name[:40]}-"
    body = {
        "apiVersion": pipeline.api_version,
        "kind": "Run",
        "metadata": metadata,
        "spec": {"pipelineSpec": pipeline.spec.to_wire(), "parameters": dict(parameters or {})},
    }
    parse_document(body, f"Run for pipeline {pipeline_name}")
    return body


@dataclass(frozen=True)
class Submitted:
    """A Run created from Python: its name, and with `wait` the status it finished with."""

    namespace: str
    name: str
    status: Mapping[str, Any] | None = None

    @property
    def phase(self) -> str | None:
        """Succeeded, Failed or Cancelled once waited for; None when not waited for."""
        return None if self.status is None else self.status.get("phase")


def submit(
    pipeline: Pipeline,
    parameters: Mapping[str, Any] | None = None,
    *,
    namespace: str = "default",
    name: str | None = None,
    cluster: RunCreator | None = None,
    wait: bool = False,
    timeout_seconds: float = 3600,
    poll_seconds: float = 2,
) -> Submitted:
    """Create a Run of `pipeline` on the cluster of the current kubeconfig. With `wait`, return once it has
    finished, with its status (TimeoutError after `timeout_seconds`)."""
    body = run_object(pipeline, parameters, namespace=namespace, name=name)
    if cluster is None:
        from conveyor.kube.cluster import Cluster, load_kube_config  # noqa: PLC0415

        cluster = Cluster(load_kube_config())
    if name is None:
        name = cluster.create_generated_run(body)
    elif not cluster.create_run(body):
        raise InvalidSpec([Issue("name", f"run {namespace}/{name} exists already")])
    if not wait:
        return Submitted(namespace, name)
    deadline = time.monotonic() + timeout_seconds
    while True:
        current = cluster.get_custom("runs", namespace, name)
        if current is None:
            raise InvalidSpec([Issue("run", f"run {namespace}/{name} was deleted while it ran")])
        status = current.get("status") or {}
        if status.get("phase") in FINISHED:
            return Submitted(namespace, name, status)
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {namespace}/{name} did not finish within {timeout_seconds:.0f}s")
        time.sleep(poll_seconds)
