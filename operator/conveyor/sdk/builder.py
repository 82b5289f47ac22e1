"""Pipelines written as Python functions: `@pipeline` and `step()` build the api models, line by line.

Each call builds (and so validates) its model at once, so a wrong field or an unknown component is an
error at the line that wrote it. What needs the whole pipeline (component contracts, templates, `when`)
is checked afterwards by `conveyor validate`'s own validator, and each issue it finds is traced back to
the line of the step, parameter or decorator it concerns.
"""

from __future__ import annotations

import ast
import contextvars
import inspect
import re
import textwrap
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel, ValidationError

from conveyor.api.pipeline import (
    Approval,
    CachePolicy,
    ContainerSpec,
    DriftTrigger,
    EnvVar,
    FanOut,
    Parameter,
    ParameterType,
    Pipeline,
    PipelineSpec,
    Resources,
    RetryPolicy,
    S3PrefixTrigger,
    Schedule,
    Step,
    StepInput,
    Trigger,
)
from conveyor.api.pod import PodSettings
from conveyor.core.validation import issues_from_pydantic, validate_pipeline
from conveyor.sdk.errors import LocatedIssue, Location, PipelineError, caller, fail
from conveyor.sdk.refs import Expr, MetricRef, OutputRef, ParamRef, condition_text, template_value

if TYPE_CHECKING:
    from conveyor.local.runner import RunOutcome
    from conveyor.sdk.launch import Submitted

M = TypeVar("M", bound=BaseModel)

_BUILDING: contextvars.ContextVar[_Builder | None] = contextvars.ContextVar("conveyor_sdk_building", default=None)

_PARAMETER_TYPES: dict[Any, ParameterType] = {
    str: ParameterType.STRING,
    int: ParameterType.INTEGER,
    float: ParameterType.NUMBER,
    bool: ParameterType.BOOLEAN,
    list: ParameterType.LIST,
    tuple: ParameterType.LIST,
}


def _model(cls: type[M], data: Any, where: Location, path: str) -> M:
    """`cls` validated from `data`, or a PipelineError naming `where` and each bad field under `path`."""
    if isinstance(data, cls):
        return data
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise PipelineError(LocatedIssue(where, i.path, i.message) for i in issues_from_pydantic(e, path)) from None


# ------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class _ParamDefault:
    """What `param()` returns: a default with a description (a function's default value says only the first)."""

    default: Any
    description: str | None
    type: str | None


_REQUIRED = object()


def param(default: Any = _REQUIRED, description: str | None = None, *, type: str | None = None) -> Any:
    """A pipeline parameter's default with a description, for a pipeline function's signature:
    `seed: int = param(42, "Random seed")`. Without a default the parameter is required."""
    return _ParamDefault(None if default is _REQUIRED else default, description, type)


def _parameter_type(annotation: Any, default: Any) -> ParameterType | None:
    base = typing.get_origin(annotation) or annotation
    if base is typing.Annotated:
        return _parameter_type(typing.get_args(annotation)[0], default)
    if base in _PARAMETER_TYPES:
        return _PARAMETER_TYPES[base]
    if annotation is inspect.Parameter.empty and default is not None:
        return _PARAMETER_TYPES.get(type(default))
    if isinstance(base, type) and issubclass(base, Sequence) and not issubclass(base, str):
        return ParameterType.LIST
    return None


def _argument_lines(func: Callable[..., Any]) -> dict[str, int]:
    """Line of each argument in the function's source, so a bad parameter is named where it is written."""
    try:
        lines, first = inspect.getsourcelines(func)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == func.__name__:
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            args += [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
            return {a.arg: first + a.lineno - 1 for a in args}
    return {}


# ------------------------------------------------------------------ steps


class Outputs:
    """A step's outputs by name: `train.outputs.model` (or `train.outputs["model"]`)."""

    def __init__(self, step: StepHandle) -> None:
        self._step = step

    def __getattr__(self, name: str) -> OutputRef:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> OutputRef:
        produced = self._step.output_names
        if produced is not None and name not in produced:
            known = ", ".join(sorted(produced)) or "none"
            raise fail(caller(), f"step {self._step.name!r} has no output {name!r} (outputs: {known})")
        return OutputRef(self._step, name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._step.output_names or ()))


class Metrics:
    """A step's metrics for conditions: `when=evaluate.metrics.roc_auc >= 0.9`."""

    def __init__(self, step: StepHandle) -> None:
        self._step = step

    def __getattr__(self, name: str) -> MetricRef:
        if name.startswith("__"):
            raise AttributeError(name)
        return MetricRef(self._step.name, name)

    def __getitem__(self, name: str) -> MetricRef:
        return MetricRef(self._step.name, name)


class StepHandle:
    """A step of the pipeline being built: its outputs and metrics feed later steps; `after()` orders it."""

    def __init__(self, builder: _Builder, index: int, model: Step, location: Location, on_exit: bool = False) -> None:
        self._builder = builder
        self.index = index
        self.on_exit = on_exit
        """Declared inside `with on_exit():`: it runs after every step has finished."""
        self.model = model
        self.location = location
        self.outputs = Outputs(self)
        self.metrics = Metrics(self)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def output_names(self) -> set[str] | None:
        """What the step produces: its component's outputs, or the outputs a container step declares."""
        if self.model.uses is not None:
            from conveyor.components.registry import get_component  # noqa: PLC0415 - a contract module only

            return set(get_component(self.model.uses).outputs)
        return {o.name for o in self.model.outputs}

    def after(self, *steps: StepHandle | str) -> StepHandle:
        """Run this step only once `steps` have finished (dependsOn), though no artifact links them."""
        where = caller()
        names = [self._builder.dependency(s, where, self.on_exit) for s in steps]
        for dep in names:
            if dep == self.name:
                raise fail(where, f"step {self.name!r} cannot run after itself", f"{self._path}.dependsOn")
            if self.name in self._builder.ancestors(dep):
                cycle = self._builder.path_between(self.name, dep)
                raise fail(
                    where, f"the steps would form a cycle: {' → '.join([*cycle, self.name])}", f"{self._path}.dependsOn"
                )
        deps = list(dict.fromkeys([*self.model.depends_on, *names]))
        data = {**self.model.model_dump(by_alias=True, exclude_unset=True), "dependsOn": deps}
        self.model = _model(Step, data, where, self._path)
        return self

    @property
    def _path(self) -> str:
        return f"spec.onExit[{self.index}]" if self.on_exit else f"spec.steps[{self.index}]"

    def __repr__(self) -> str:
        return f"<step {self.name}>"


@dataclass(frozen=True)
class External:
    """External data for a step's input: s3://, file:// or https://, optionally pinned to its sha256."""

    uri: str
    digest: str | None = None


def uri(location: str, digest: str | None = None) -> External:
    """An external input, `inputs={"data": uri("s3://bucket/data.csv", digest="sha256:...")}`."""
    return External(location, digest)


InputValue = OutputRef | StepHandle | External | str


@dataclass
class _Builder:
    """The pipeline being built by one call of a pipeline function."""

    steps: dict[str, StepHandle] = field(default_factory=dict)
    exit_steps: dict[str, StepHandle] = field(default_factory=dict)
    """The onExit steps, declared inside `with on_exit():`."""
    exiting: bool = False
    """Inside `with on_exit():` now: step() declares onExit steps."""

    def handle(self, name: str) -> StepHandle | None:
        return self.steps.get(name) or self.exit_steps.get(name)

    def dependency(self, value: StepHandle | str, where: Location, on_exit: bool = False) -> str:
        if isinstance(value, StepHandle):
            if value._builder is not self:
                raise fail(where, f"step {value.name!r} belongs to another pipeline")
            if value.on_exit and not on_exit:
                raise fail(where, _exit_reference(value.name, "run after"))
            return value.name
        if isinstance(value, str):
            return value
        raise fail(where, f"expected a step (or its name), got {type(value).__name__} {value!r}")

    def upstream(self, name: str) -> list[str]:
        handle = self.handle(name)
        if handle is None:
            return []
        return [i.step for i in handle.model.inputs if i.step is not None] + list(handle.model.depends_on)

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = self.upstream(name)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.upstream(n))
        return seen

    def path_between(self, start: str, end: str) -> list[str]:
        """Steps from `start` down the data flow to `end` (end depends on ... on start)."""
        trail = [end]
        while trail[-1] != start:
            trail.append(next(n for n in self.upstream(trail[-1]) if n == start or start in self.ancestors(n)))
        return list(reversed(trail))

    def input_model(self, name: str, value: Any, where: Location, path: str, on_exit: bool = False) -> dict[str, Any]:
        if isinstance(value, StepHandle):
            produced = sorted(value.output_names or ())
            if len(produced) != 1:
                raise fail(
                    where,
                    f"step {value.name!r} has {len(produced)} outputs ({', '.join(produced) or 'none'}): "
                    f"pass one, e.g. {value.name}.outputs.{produced[0] if produced else 'NAME'}",
                    path,
                )
            value = OutputRef(value, produced[0])
        if isinstance(value, OutputRef):
            if value.step._builder is not self:
                raise fail(where, f"step {value.step.name!r} belongs to another pipeline", path)
            if value.step.on_exit and not on_exit:
                raise fail(where, _exit_reference(value.step.name, "read an output of"), path)
            return {"name": name, "step": value.step.name, "output": value.output}
        if isinstance(value, External):
            return {"name": name, "uri": value.uri, **({"digest": value.digest} if value.digest else {})}
        if isinstance(value, str):
            return {"name": name, "uri": value}
        if isinstance(value, StepInput):
            return value.model_dump(by_alias=True, exclude_none=True) | {"name": name}
        raise fail(
            where,
            f"input {name!r} must be a step's output, a step, or a URI, not {type(value).__name__} {value!r}",
            path,
        )


def _exit_reference(name: str, what: str) -> str:
    return (
        f"step {name!r} is an onExit step: a step cannot {what} one (onExit steps run after every step has "
        "finished); declare this one inside `with sdk.on_exit():` too"
    )


class _OnExitBlock:
    """The `with on_exit():` block (a class, not a generator, so a mistake is named at the user's `with` line)."""

    def __init__(self, builder: _Builder) -> None:
        self._builder = builder

    def __enter__(self) -> None:
        if self._builder.exiting:
            raise fail(caller(), "on_exit() blocks do not nest: this one is already inside one", "spec.onExit")
        self._builder.exiting = True

    def __exit__(self, *exc: object) -> None:
        self._builder.exiting = False


def on_exit() -> _OnExitBlock:
    """Steps declared inside run once every other step has finished, whatever the outcome (spec.onExit):

        with sdk.on_exit():
            sdk.step("notify", image="curlimages/curl", command=["notify.sh", sdk.run_phase, sdk.run_failed_steps])

    They may read outputs of the steps (an onExit step is skipped when the step whose output it reads did not
    succeed), depend on each other, and read the outcome: `sdk.run_phase`, `sdk.run_failed_steps`,
    `sdk.run_message` in commands and settings, `when=sdk.run_phase == "Failed"`."""
    return _OnExitBlock(_building("on_exit()"))


def _building(what: str) -> _Builder:
    builder = _BUILDING.get()
    if builder is None:
        raise fail(caller(), f"{what} is only possible inside a @pipeline function while it is compiled")
    return builder


def _retry_policy(value: int | RetryPolicy | Mapping[str, Any]) -> Any:
    return {"limit": value} if isinstance(value, int) and not isinstance(value, bool) else value


def _cache_policy(value: bool | CachePolicy | Mapping[str, Any]) -> Any:
    return {"enabled": value} if isinstance(value, bool) else value


def _approval(value: bool | str | Approval | Mapping[str, Any]) -> Any:
    if isinstance(value, bool):
        return {"required": value}
    if isinstance(value, str):
        return {"message": value}
    return value


def _fan_out(value: Any, max_concurrency: int | None) -> Any:
    if isinstance(value, FanOut):
        data: dict[str, Any] = value.model_dump(by_alias=True, exclude_unset=True)
    elif isinstance(value, ParamRef):
        data = {"parameter": value.name}
    elif isinstance(value, Mapping):
        data = {"grid": template_value(dict(value))}
    elif isinstance(value, list | tuple):
        data = {"items": template_value(list(value))}
    else:
        raise TypeError(
            f"for_each takes a list of items, a list parameter, a grid (a dict of lists) or a FanOut, "
            f"not {type(value).__name__}"
        )
    if max_concurrency is not None:
        data["maxConcurrency"] = max_concurrency
    return data


def _env(value: Mapping[str, Any] | Sequence[EnvVar | Mapping[str, Any]]) -> list[Any]:
    if isinstance(value, Mapping):
        return [{"name": k, "value": str(template_value(v))} for k, v in value.items()]
    return list(value)


def step(
    name: str,
    uses: str | None = None,
    with_: Mapping[str, Any] | None = None,
    *,
    inputs: Mapping[str, InputValue] | None = None,
    outputs: Sequence[str] = (),
    depends_on: Sequence[StepHandle | str] = (),
    container: ContainerSpec | Mapping[str, Any] | None = None,
    image: str | None = None,
    command: Sequence[Any] | None = None,
    args: Sequence[Any] = (),
    env: Mapping[str, Any] | Sequence[EnvVar | Mapping[str, Any]] = (),
    when: Expr | ParamRef | str | None = None,
    for_each: FanOut | ParamRef | Mapping[str, Sequence[Any]] | Sequence[Any] | None = None,
    max_concurrency: int | None = None,
    retries: int | RetryPolicy | Mapping[str, Any] | None = None,
    timeout_seconds: int | None = None,
    start_timeout_seconds: int | None = None,
    cache: bool | CachePolicy | Mapping[str, Any] | None = None,
    resources: Resources | Mapping[str, Any] | None = None,
    approval: bool | str | Approval | Mapping[str, Any] | None = None,
    pod: PodSettings | Mapping[str, Any] | None = None,
) -> StepHandle:
    """Add a step: a built-in component (`uses=` with its settings in `with_`) or a container (`image=` and
    `command=`, or `container=`). `inputs` wire other steps' outputs (or URIs) in; a metric of a step read in
    `when` makes this step wait for that one. `pod` (Secrets, volumes, placement; docs/pod-settings.md) merges over
    the pipeline's."""
    where = caller()
    builder = _building("step()")
    exiting = builder.exiting
    index = len(builder.exit_steps if exiting else builder.steps)
    path = f"spec.onExit[{index}]" if exiting else f"spec.steps[{index}]"
    if (first := builder.handle(name)) is not None:
        raise fail(where, f"duplicate step name {name!r} (first at {first.location})", f"{path}.name")
    if uses is not None:
        from conveyor.components.registry import UnknownComponentError, get_component  # noqa: PLC0415

        try:
            get_component(uses)
        except UnknownComponentError as e:
            raise fail(where, str(e), f"{path}.uses") from None
    if image is not None or command is not None:
        if container is not None:
            raise fail(where, "give container= or image= and command=, not both", f"{path}.container")
        container = {"image": image, "command": command, "args": args, "env": env}
    if (uses is None) == (container is None):
        raise fail(
            where, "a step needs exactly one of uses= (a built-in component) or image= and command= (a container)", path
        )
    data: dict[str, Any] = {"name": name}
    try:
        if uses is not None:
            data["uses"] = uses
            if with_ is not None:
                data["with"] = template_value(dict(with_))
        if container is not None:
            if isinstance(container, Mapping):
                spec = {k: v for k, v in container.items() if v is not None}
                for key in ("command", "args"):
                    if key in spec:
                        spec[key] = [str(template_value(x)) for x in spec[key]]
                if "env" in spec:
                    spec["env"] = _env(spec["env"])
                container = spec
            data["container"] = container
        if inputs:
            data["inputs"] = [
                builder.input_model(k, v, where, f"{path}.inputs[{i}]", exiting)
                for i, (k, v) in enumerate(inputs.items())
            ]
        if outputs:
            data["outputs"] = [{"name": o} if isinstance(o, str) else o for o in outputs]
        deps = [builder.dependency(d, where, exiting) for d in depends_on]
        if when is not None:
            data["when"], read = condition_text(when)
            upstream = {i["step"] for i in data.get("inputs", []) if "step" in i} | set(deps)
            known = upstream | {a for u in upstream for a in builder.ancestors(u)}
            deps += [s for s in sorted(read) if s not in known and s != name]
        if deps:
            data["dependsOn"] = list(dict.fromkeys(deps))
        if for_each is not None:
            data["forEach"] = _fan_out(for_each, max_concurrency)
        elif max_concurrency is not None:
            raise fail(where, "max_concurrency limits a fan-out: give for_each= too", f"{path}.forEach")
        if retries is not None:
            data["retries"] = _retry_policy(retries)
        if timeout_seconds is not None:
            data["timeoutSeconds"] = timeout_seconds
        if start_timeout_seconds is not None:
            data["startTimeoutSeconds"] = start_timeout_seconds
        if cache is not None:
            data["cache"] = _cache_policy(cache)
        if resources is not None:
            data["resources"] = resources
        if approval is not None:
            data["approval"] = _approval(approval)
        if pod is not None:
            data["pod"] = pod
    except TypeError as e:
        raise fail(where, str(e), path) from None
    handle = StepHandle(builder, index, _model(Step, data, where, path), where, exiting)
    (builder.exit_steps if exiting else builder.steps)[name] = handle
    return handle


# ------------------------------------------------------------------ pipelines


def on_s3(prefix: str, *, poll_seconds: int | None = None, parameters: Mapping[str, Any] | None = None) -> Trigger:
    """A trigger: start a Run when new objects appear under an s3:// prefix."""
    s3 = S3PrefixTrigger(uri=prefix) if poll_seconds is None else S3PrefixTrigger(uri=prefix, poll_seconds=poll_seconds)
    return Trigger(s3=s3, parameters=dict(parameters or {}))


def on_drift(model_deployment: str, *, parameters: Mapping[str, Any] | None = None) -> Trigger:
    """A trigger: start a Run when a ModelDeployment in the same namespace reports drift."""
    return Trigger(drift=DriftTrigger(model_deployment=model_deployment), parameters=dict(parameters or {}))


_NAME = re.compile(r"^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CYCLE = re.compile(r"cycle: (\S+)")


class PipelineDefinition:
    """A pipeline function and its settings; `build()` runs it and returns the validated Pipeline model."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None,
        description: str | None,
        settings: Mapping[str, Any],
        metadata: Mapping[str, Any],
        location: Location,
    ) -> None:
        self.func = func
        self.name = name or func.__name__.replace("_", "-")
        doc = inspect.getdoc(func)
        self.description = (
            description if description is not None else (" ".join(doc.split("\n\n")[0].split()) if doc else None)
        )
        self.settings = dict(settings)
        self.metadata = dict(metadata)
        self.location = location
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__

    def _parameters(self) -> tuple[list[Parameter], dict[str, Location], dict[str, ParamRef]]:
        lines = _argument_lines(self.func)
        try:
            hints = typing.get_type_hints(self.func, include_extras=True)
        except Exception as e:  # any failure to resolve an annotation is the user's to fix
            raise fail(self.location, f"cannot read the parameters' type annotations: {e}") from None
        params, where, refs = [], {}, {}
        for i, p in enumerate(inspect.signature(self.func).parameters.values()):
            at = Location(self.location.file, lines.get(p.name, self.location.line))
            path = f"spec.parameters[{i}]"
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise fail(at, f"a pipeline parameter needs a name and a type, not *{p.name}", path)
            spec = (
                p.default
                if isinstance(p.default, _ParamDefault)
                else _ParamDefault(None if p.default is inspect.Parameter.empty else p.default, None, None)
            )
            type_ = spec.type or _parameter_type(hints.get(p.name, inspect.Parameter.empty), spec.default)
            if type_ is None:
                annotation = hints.get(p.name, "no annotation")
                optional = type(None) in typing.get_args(annotation)
                raise fail(
                    at,
                    f"parameter {p.name!r}: annotate it as str, int, float, bool or list (got {annotation!r})"
                    + ("; a parameter is never None: one without a default is required" if optional else ""),
                    f"{path}.type",
                )
            data: dict[str, Any] = {"name": p.name, "type": type_}
            if spec.default is not None:
                data["default"] = list(spec.default) if isinstance(spec.default, tuple) else spec.default
            if spec.description is not None:
                data["description"] = spec.description
            params.append(_model(Parameter, data, at, path))
            where[p.name] = at
            refs[p.name] = ParamRef(p.name, params[-1].type)
        return params, where, refs

    def build(self) -> Pipeline:
        """Run the pipeline function and return the Pipeline it describes, validated as `conveyor validate`
        would; raises PipelineError naming file:line for every problem."""
        params, param_lines, refs = self._parameters()
        builder = _Builder()
        token = _BUILDING.set(builder)
        try:
            self.func(**refs)
        finally:
            _BUILDING.reset(token)
        handles = list(builder.steps.values())
        exit_handles = list(builder.exit_steps.values())
        data: dict[str, Any] = {}
        if self.description is not None:
            data["description"] = self.description
        data["parameters"] = params
        data["steps"] = [h.model for h in handles]
        if exit_handles:
            data["onExit"] = [h.model for h in exit_handles]
        for key, value in self.settings.items():
            if value is not None:
                data[key] = value
        if not _NAME.match(self.name):
            raise fail(
                self.location,
                f"pipeline name {self.name!r} is not a DNS label (lower case letters, digits and '-', at most 63)",
                "metadata.name",
            )
        if not handles:
            raise fail(self.location, f"pipeline {self.name!r} has no steps: call step() in its function", "spec.steps")
        spec = _model(PipelineSpec, data, self.location, "spec")
        pipeline = _model(
            Pipeline,
            {
                "apiVersion": "conveyor.dev/v1alpha1",
                "kind": "Pipeline",
                "metadata": {"name": self.name, **self.metadata},
                "spec": spec,
            },
            self.location,
            "",
        )
        issues = validate_pipeline(pipeline.spec, "spec")
        if issues:
            raise PipelineError(
                LocatedIssue(
                    self._location_of(i.path, i.message, handles, params, param_lines, exit_handles), i.path, i.message
                )
                for i in issues
            )
        return pipeline

    def _location_of(
        self,
        path: str,
        message: str,
        handles: list[StepHandle],
        params: list[Parameter],
        lines: dict[str, Location],
        exit_handles: Sequence[StepHandle] = (),
    ) -> Location:
        """The line that wrote the part of the spec an issue's path names."""
        if m := re.match(r"spec\.steps\[(\d+)\]", path):
            return handles[int(m.group(1))].location
        if m := re.match(r"spec\.onExit\[(\d+)\]", path):
            return exit_handles[int(m.group(1))].location
        if path == "spec.onExit" and (m := _CYCLE.search(message)):
            by_exit = {h.name: h for h in exit_handles}
            if m.group(1) in by_exit:
                return by_exit[m.group(1)].location
        if m := re.match(r"spec\.parameters\[(\d+)\]", path):
            return lines.get(params[int(m.group(1))].name, self.location)
        if path == "spec.steps" and (m := _CYCLE.search(message)):
            by_name = {h.name: h for h in handles}
            if m.group(1) in by_name:
                return by_name[m.group(1)].location
        return self.location

    def to_yaml(self) -> str:
        """The Pipeline YAML `conveyor compile` writes."""
        from conveyor.sdk.compiler import to_yaml  # noqa: PLC0415

        return to_yaml(self.build())

    def compile(self, path: str | Path) -> Path:
        """Write the Pipeline YAML to `path` (as `conveyor compile -o path` does)."""
        out = Path(path)
        out.write_text(self.to_yaml())
        return out

    def run_local(self, parameters: Mapping[str, Any] | None = None, **options: Any) -> RunOutcome:
        """Run on this machine, as `conveyor run` runs the YAML; options: state_dir, parallelism, progress,
        env_file (as `conveyor run --env-file`)."""
        from conveyor.sdk.launch import run_local  # noqa: PLC0415

        return run_local(self.build(), parameters, **options)

    def submit(self, parameters: Mapping[str, Any] | None = None, **options: Any) -> Submitted:
        """Create a Run with this pipeline inline on the current kubeconfig's cluster (its name, and with
        wait=True its final status). Options: namespace, name, wait, timeout_seconds, cluster."""
        from conveyor.sdk.launch import submit  # noqa: PLC0415

        return submit(self.build(), parameters, **options)

    def __repr__(self) -> str:
        return f"<pipeline {self.name} ({self.location})>"


F = TypeVar("F", bound=Callable[..., Any])


@overload
def pipeline(func: Callable[..., Any], /) -> PipelineDefinition: ...


@overload
def pipeline(
    *,
    name: str | None = None,
    description: str | None = None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    fail_fast: bool | None = None,
    timeout_seconds: int | None = None,
    parallelism: int | None = None,
    max_concurrent_runs: int | None = None,
    schedule: Schedule | str | Mapping[str, Any] | None = None,
    triggers: Sequence[Trigger | Mapping[str, Any]] = (),
    pod: PodSettings | Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], PipelineDefinition]: ...


def pipeline(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    fail_fast: bool | None = None,
    timeout_seconds: int | None = None,
    parallelism: int | None = None,
    max_concurrent_runs: int | None = None,
    schedule: Schedule | str | Mapping[str, Any] | None = None,
    triggers: Sequence[Trigger | Mapping[str, Any]] = (),
    pod: PodSettings | Mapping[str, Any] | None = None,
) -> PipelineDefinition | Callable[[Callable[..., Any]], PipelineDefinition]:
    """Declare a pipeline: the function's arguments are its typed parameters, its body calls `step()`.

    The name defaults to the function's (underscores become hyphens), the description to the first
    paragraph of its docstring. A `schedule` may be just the cron text."""

    def wrap(f: Callable[..., Any]) -> PipelineDefinition:
        settings = {
            "failFast": fail_fast,
            "timeoutSeconds": timeout_seconds,
            "parallelism": parallelism,
            "maxConcurrentRuns": max_concurrent_runs,
            "schedule": {"cron": schedule} if isinstance(schedule, str) else schedule,
            "triggers": list(triggers) or None,
            "pod": pod,
        }
        metadata: dict[str, Any] = {}
        if namespace is not None:
            metadata["namespace"] = namespace
        if labels:
            metadata["labels"] = dict(labels)
        if annotations:
            metadata["annotations"] = dict(annotations)
        at = Location(str(Path(f.__code__.co_filename).resolve()), f.__code__.co_firstlineno)
        return PipelineDefinition(
            f, name=name, description=description, settings=settings, metadata=metadata, location=at
        )

    return wrap(func) if func is not None else wrap
