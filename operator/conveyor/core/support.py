"""Which spec features each shell carries out today. A feature a shell cannot honour is rejected
by name ("not supported yet"), never silently ignored; this table shrinks as features land."""

from __future__ import annotations

from conveyor.api.pipeline import PipelineSpec
from conveyor.core.validation import Issue

LOCAL = "local runner"


def unsupported(spec: PipelineSpec, shell: str, path: str = "spec") -> list[Issue]:
    def no(where: str, what: str) -> Issue:
        return Issue(where, f"{what} is not supported yet by the {shell}")

    issues = []
    if spec.schedule is not None:
        issues.append(
            no(f"{path}.schedule", "a schedule (apply the Pipeline to a cluster)" if shell == LOCAL else "a schedule")
        )
    if spec.triggers:
        issues.append(no(f"{path}.triggers", "triggers"))
    if spec.max_concurrent_runs is not None and shell == LOCAL:
        issues.append(no(f"{path}.maxConcurrentRuns", "maxConcurrentRuns"))
    for i, step in enumerate(spec.steps):
        sp = f"{path}.steps[{i}]"
        if step.for_each is not None:
            issues.append(no(f"{sp}.forEach", "fan-out (forEach)"))
        if step.approval is not None and step.approval.required:
            issues.append(no(f"{sp}.approval", "approval"))
        for j, inp in enumerate(step.inputs):
            if inp.uri and inp.uri.startswith("s3://") and shell == LOCAL:
                issues.append(no(f"{sp}.inputs[{j}].uri", "an s3:// input"))
    return issues
