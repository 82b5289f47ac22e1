"""Which spec features each shell carries out today. A feature a shell cannot honour is rejected
by name ("not supported yet"), never silently ignored; this table shrinks as features land."""

from __future__ import annotations

from conveyor.api.pipeline import PipelineSpec
from conveyor.api.pod import PodSettings
from conveyor.core.validation import Issue, step_paths

LOCAL = "local runner"
OPERATOR = "operator"


def _no(where: str, what: str, shell: str) -> Issue:
    return Issue(where, f"{what} is not supported yet by the {shell}")


LOCAL_POD_SETTINGS = ("env",)
"""What the local runner honours of pod settings: `env`, literal values and valueFrom from `--env-file`
(core/envfile.py). It runs steps as this machine's processes: no Secrets, volumes, nodes or pod metadata."""


def _pod_settings(pod: PodSettings | None, shell: str, path: str) -> list[Issue]:
    if pod is None or shell != LOCAL:
        return []
    return [
        _no(f"{path}.{field.alias}", f"pod setting {field.alias} (pod settings apply on a cluster)", shell)
        for name, field in PodSettings.model_fields.items()
        if field.alias and getattr(pod, name) and name not in LOCAL_POD_SETTINGS
    ]


def unsupported_steps(spec: PipelineSpec, shell: str, path: str = "spec") -> list[Issue]:
    """Step features a shell cannot run yet (checked for every Run)."""
    issues = _pod_settings(spec.pod, shell, f"{path}.pod")
    for sp, step in step_paths(spec, path):
        issues += _pod_settings(step.pod, shell, f"{sp}.pod")
        if step.resource is not None and shell == LOCAL:
            issues.append(
                Issue(
                    f"{sp}.resource",
                    f"step {step.name!r} is a resource step: the {shell} cannot create cluster objects "
                    "(run it on a cluster)",
                )
            )
        if step.approval is not None and step.approval.required and shell == LOCAL:
            issues.append(_no(f"{sp}.approval", "approval (approve on a cluster: conveyor approve)", shell))
        for j, inp in enumerate(step.inputs):
            if inp.uri and inp.uri.startswith("s3://") and shell == LOCAL:
                issues.append(_no(f"{sp}.inputs[{j}].uri", "an s3:// input", shell))
    return issues


def unsupported(spec: PipelineSpec, shell: str, path: str = "spec") -> list[Issue]:
    """Everything a shell cannot carry out yet, pipeline-level features included."""
    issues = []
    if spec.schedule is not None and shell == LOCAL:  # the operator runs schedules (controller/pipelines.py)
        issues.append(_no(f"{path}.schedule", "a schedule", shell))
    if spec.triggers and shell == LOCAL:  # the operator runs triggers (controller/pipelines.py)
        issues.append(_no(f"{path}.triggers", "triggers (they start Runs on a cluster)", shell))
    if spec.max_concurrent_runs is not None and shell == LOCAL:
        issues.append(_no(f"{path}.maxConcurrentRuns", "maxConcurrentRuns (it limits Runs on a cluster)", shell))
    return issues + unsupported_steps(spec, shell, path)
