"""Pipelines in Python: `@pipeline` functions whose `step()` calls compile to the Pipeline YAML.

    from conveyor import sdk

    @sdk.pipeline(schedule="0 3 * * *")
    def nightly(seed: int = 42) -> None:
        \"\"\"Retrain every night.\"\"\"
        data = sdk.step("ingest", uses="ingest", with_={"source": "sklearn://iris"})
        sdk.step("split", uses="split", inputs={"dataset": data.outputs.dataset}, with_={"seed": seed})

`conveyor compile module:nightly -o pipeline.yaml` writes the YAML; `nightly.run_local()` runs it here and
`nightly.submit()` on a cluster; steps declared inside `with sdk.on_exit():` run after all the others, whatever
the outcome (`sdk.run_phase`, `sdk.run_failed_steps`). The settings are the api models' own (RetryPolicy,
Resources, ...); `@function_step` makes a plain Python function a step that runs in the step image.
"""

from conveyor.api.pipeline import (
    Approval,
    Backoff,
    CachePolicy,
    ConcurrencyPolicy,
    ContainerSpec,
    EnvVar,
    FanOut,
    Resources,
    RetryPolicy,
    Schedule,
    StepInput,
    Trigger,
)
from conveyor.api.pod import PodSettings
from conveyor.sdk.builder import (
    External,
    PipelineDefinition,
    StepHandle,
    on_drift,
    on_exit,
    on_s3,
    param,
    pipeline,
    step,
    uri,
)
from conveyor.sdk.errors import Location, PipelineError
from conveyor.sdk.functions import FunctionStep, InputPath, OutputPath, function_step
from conveyor.sdk.refs import (
    Expr,
    OutputRef,
    ParamRef,
    input_path,
    item,
    output_path,
    run_failed_steps,
    run_id,
    run_message,
    run_name,
    run_namespace,
    run_phase,
)

__all__ = [
    "Approval",
    "Backoff",
    "CachePolicy",
    "ConcurrencyPolicy",
    "ContainerSpec",
    "EnvVar",
    "Expr",
    "External",
    "FanOut",
    "FunctionStep",
    "InputPath",
    "Location",
    "OutputPath",
    "OutputRef",
    "ParamRef",
    "PipelineDefinition",
    "PipelineError",
    "PodSettings",
    "Resources",
    "RetryPolicy",
    "Schedule",
    "StepHandle",
    "StepInput",
    "Trigger",
    "function_step",
    "input_path",
    "item",
    "on_drift",
    "on_exit",
    "on_s3",
    "output_path",
    "param",
    "pipeline",
    "run_failed_steps",
    "run_id",
    "run_message",
    "run_name",
    "run_namespace",
    "run_phase",
    "step",
    "uri",
]
