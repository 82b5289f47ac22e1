"""One validator for the CLI, the local runner and the operator: every problem named by its field path.

Schema-level checks (types, ranges, CEL rules) come from the pydantic models; this module adds
what needs the whole document: references between steps, cycles, parameter types, templates,
cron expressions, component contracts and features a shell does not support yet.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ValidationError

from conveyor.api.modeldeployment import ModelDeployment
from conveyor.api.pipeline import Parameter, ParameterType, Pipeline, PipelineSpec, Step
from conveyor.api.pod import PodSettings
from conveyor.api.run import Run
from conveyor.core.dag import CycleFound, Dag
from conveyor.core.documents import object_problem
from conveyor.core.templates import TemplateError, references, strings_in

KINDS: dict[str, type[BaseModel]] = {"Pipeline": Pipeline, "Run": Run, "ModelDeployment": ModelDeployment}
RUN_VARIABLES = frozenset({"name", "namespace", "id"})
# What an onExit step may read of the run besides RUN_VARIABLES: how the steps ended.
EXIT_RUN_VARIABLES = frozenset({"phase", "failedSteps", "message"})


@dataclass(frozen=True, order=True)
class Issue:
    """One problem: where (a field path such as spec.steps[2].inputs[0].step) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidSpec(ValueError):
    """A document with problems; str() lists every issue, one per line, prefixed by the source."""

    def __init__(self, issues: Iterable[Issue], source: str | None = None) -> None:
        self.issues = sorted(set(issues))
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + str(i) for i in self.issues))


def issues_text(issues: Iterable[Issue]) -> str:
    """Issues on one line (for a condition message), sorted and without repeats."""
    return "; ".join(str(i) for i in sorted(set(issues)))


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith(("function-", "json-or-python")) or part in ("list", "dict", "[key]"):
            continue  # pydantic's internal union/validator markers, not fields
        else:
            path += f".{part}" if path else str(part)
    return path or "(document)"


def issues_from_pydantic(error: ValidationError, prefix: str = "") -> list[Issue]:
    """Turn pydantic's errors into field-path issues."""
    out = []
    for e in error.errors():
        path = _loc_to_path(tuple(e["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path != "(document)" else prefix
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown field"
        elif e["type"] == "missing":
            message = "required field is missing"
        out.append(Issue(path, message))
    return out


def parse_document(data: Any, source: str | None = None) -> Pipeline | Run | ModelDeployment:
    """A YAML/JSON document → the model of its kind, fully validated; raises InvalidSpec."""
    if not isinstance(data, Mapping):
        raise InvalidSpec([Issue("(document)", "expected a mapping with apiVersion, kind and spec")], source)
    if (too_deep := object_problem(data)) is not None:
        raise InvalidSpec([Issue("(document)", too_deep)], source)
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(KINDS)
        raise InvalidSpec([Issue("kind", f"unknown kind {kind!r} (expected one of {known})")], source)
    if data.get("apiVersion") != "conveyor.dev/v1alpha1":
        raise InvalidSpec(
            [
                Issue(
                    "apiVersion", f"unsupported apiVersion {data.get('apiVersion')!r} (expected conveyor.dev/v1alpha1)"
                )
            ],
            source,
        )
    try:
        doc = KINDS[kind].model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(issues_from_pydantic(e), source) from None
    assert isinstance(doc, Pipeline | Run | ModelDeployment)
    issues: list[Issue] = []
    if isinstance(doc, Pipeline):
        issues = validate_pipeline(doc.spec, "spec")
    elif isinstance(doc, Run) and doc.spec.pipeline_spec is not None:
        issues = validate_pipeline(doc.spec.pipeline_spec, "spec.pipelineSpec")
        issues += resolve_parameters(doc.spec.pipeline_spec, doc.spec.parameters, "spec.parameters")[1]
    if issues:
        raise InvalidSpec(issues, source)
    return doc


# ---------------------------------------------------------------- parameters

_PY_TYPES: dict[ParameterType, tuple[type, ...]] = {
    ParameterType.STRING: (str,),
    ParameterType.INTEGER: (int,),
    ParameterType.NUMBER: (int, float),
    ParameterType.BOOLEAN: (bool,),
    ParameterType.LIST: (list,),
}


def a_type(t: ParameterType) -> str:
    """A parameter type with its article: "an integer", "a list"."""
    return f"an {t.value}" if t.value[0] in "aeiou" else f"a {t.value}"


def type_error(param: Parameter, value: Any) -> str | None:
    """Why `value` does not fit the parameter's type, or None."""
    expected = _PY_TYPES[param.type]
    ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
    if ok:
        return None
    return f"expected {a_type(param.type)}, got {type(value).__name__} {value!r}"


def coerce_cli_value(param: Parameter, text: str) -> Any:
    """`-p key=value` arrives as text; read it as the parameter's type (lists as JSON). A ValueError names
    the parameter, its type and the text."""
    import json  # noqa: PLC0415 - only the CLI path needs it

    def refused(how: str = "") -> ValueError:
        return ValueError(f"parameter {param.name!r} is {a_type(param.type)}{how}: cannot read {text!r} as one")

    match param.type:
        case ParameterType.STRING:
            return text
        case ParameterType.INTEGER:
            try:
                return int(text)
            except ValueError:
                raise refused() from None
        case ParameterType.NUMBER:
            try:
                return float(text)
            except ValueError:
                raise refused() from None
        case ParameterType.BOOLEAN:
            lowered = text.lower()
            if lowered not in ("true", "false"):
                raise refused(" (true or false)")
            return lowered == "true"
        case ParameterType.LIST:
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if not isinstance(value, list):
                raise refused(" (a JSON list such as [1, 2])")
            return value


def resolve_parameters(
    spec: PipelineSpec, overrides: Mapping[str, Any], path: str = "parameters"
) -> tuple[dict[str, Any], list[Issue]]:
    """Defaults plus overrides, the overrides type-checked: (values, issues). A default of the wrong type is
    validate_pipeline's to report, at its declaration; naming it again here would point at an override the
    user never wrote."""
    declared = {p.name: p for p in spec.parameters}
    issues = [
        Issue(f"{path}.{name}", f"unknown parameter (declared: {', '.join(declared) or 'none'})")
        for name in overrides
        if name not in declared
    ]
    values: dict[str, Any] = {}
    for name, param in declared.items():
        if name in overrides:
            value = overrides[name]
            if problem := type_error(param, value):
                issues.append(Issue(f"{path}.{name}", problem))
        elif param.default is not None:
            value = param.default
        else:
            issues.append(Issue(f"{path}.{name}", "required parameter has no value (it has no default)"))
            continue
        values[name] = value
    return values, issues


# ---------------------------------------------------------------- pipelines


def _component_contract(step: Step) -> tuple[set[str] | None, set[str] | None, set[str] | None, str | None]:
    """(required inputs, all inputs, outputs, error) of a `uses` step's component."""
    from conveyor.components.registry import UnknownComponentError, get_component  # noqa: PLC0415

    assert step.uses is not None
    try:
        component = get_component(step.uses)
    except UnknownComponentError as e:
        return None, None, None, str(e.args[0]) if e.args else str(e)
    return (
        set(component.required_inputs),
        set(component.required_inputs | component.optional_inputs),
        set(component.outputs),
        None,
    )


def _unknown_component(step: Step) -> bool:
    return step.uses is not None and _component_contract(step)[3] is not None


def step_outputs(step: Step) -> set[str]:
    """Names of the outputs a step produces (a component's declared outputs, or the container's)."""
    if step.uses is not None:
        outputs = _component_contract(step)[2]
        return outputs if outputs is not None else set()
    return {o.name for o in step.outputs}


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _duplicates(names: Iterable[str]) -> list[tuple[int, str]]:
    seen: set[str] = set()
    dups = []
    for i, n in enumerate(names):
        if n in seen:
            dups.append((i, n))
        seen.add(n)
    return dups


_STEP_REF = re.compile(r"steps\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*['\"]([^'\"]+)['\"]\s*\])")
_PARAM_REF = re.compile(r"params\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_RUN_REF = re.compile(r"(?<![A-Za-z0-9_.])run\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")


def step_paths(spec: PipelineSpec, path: str = "spec") -> list[tuple[str, Step]]:
    """(field path, step) of every step and then every onExit step: spec.steps[i], spec.onExit[j]."""
    return [(f"{path}.steps[{i}]", s) for i, s in enumerate(spec.steps)] + [
        (f"{path}.onExit[{i}]", s) for i, s in enumerate(spec.on_exit or [])
    ]


def _check_when(
    step: Step, sp: str, params: set[str], known: set[str], readable: set[str], on_exit: bool, issues: list[Issue]
) -> None:
    """`known`: the step names that exist; `readable`: those this step's condition may read (its ancestors, and
    for an onExit step every step as well: they have all finished). Reading any other is a cycle waiting to
    happen, so it is refused."""
    import cel  # noqa: PLC0415 - the CEL engine is only needed when a `when` exists

    assert step.when is not None
    path = f"{sp}.when"
    try:
        program = cel.compile(step.when)
    except ValueError as e:
        issues.append(Issue(path, f"invalid expression: {str(e).splitlines()[0]}"))
        return
    allowed_vars = {"params", "steps", "run"} if on_exit else {"params", "steps"}
    unknown_vars = set(program.variables()) - allowed_vars
    for v in sorted(unknown_vars):
        readable_vars = "params, steps and run" if on_exit else "params and steps; run only in an onExit step"
        issues.append(Issue(path, f"unknown variable {v!r} (a condition may read {readable_vars})"))
    if on_exit:
        for name in _RUN_REF.findall(step.when):
            if name not in EXIT_RUN_VARIABLES:
                issues.append(Issue(path, f"unknown run field {name!r} (known: {_names(EXIT_RUN_VARIABLES)})"))
    for name in _PARAM_REF.findall(step.when):
        if name not in params:
            issues.append(Issue(path, f"unknown parameter {name!r}"))
    for dotted, bracketed in _STEP_REF.findall(step.when):
        ref = dotted or bracketed
        if ref not in known:
            issues.append(Issue(path, f"unknown step {ref!r}"))
        elif ref not in readable:
            issues.append(
                Issue(path, f"reads step {ref!r}, which is not upstream of {step.name!r}: add it to dependsOn")
            )


def _check_templates(
    step: Step, sp: str, params: set[str], inputs: set[str], outputs: set[str], on_exit: bool, issues: list[Issue]
) -> None:
    item_keys: set[str] | None = None
    if step.for_each is not None:
        item_keys = set(step.for_each.grid) if step.for_each.grid is not None else set()
    allowed: dict[str, set[str] | None] = {
        "params": params,
        "inputs": inputs,
        "outputs": outputs,
        "run": set(RUN_VARIABLES | EXIT_RUN_VARIABLES) if on_exit else set(RUN_VARIABLES),
    }
    texts: list[tuple[str, str]] = []
    if step.container is not None:
        texts += [(f"{sp}.container.command[{i}]", c) for i, c in enumerate(step.container.command)]
        texts += [(f"{sp}.container.args[{i}]", a) for i, a in enumerate(step.container.args)]
        texts += [(f"{sp}.container.env[{i}].value", e.value) for i, e in enumerate(step.container.env)]
    if step.with_ is not None:
        texts += list(strings_in(step.with_, f"{sp}.with"))
    if step.resource is not None:
        texts += list(strings_in(step.resource.manifest, f"{sp}.resource.manifest"))
    for path, text in texts:
        try:
            refs = list(references(text))
        except TemplateError as e:
            issues.append(Issue(path, str(e)))
            continue
        for ref in refs:
            head, rest = ref.parts[0], ref.parts[1:]
            if head == "item":
                if item_keys is None:
                    issues.append(Issue(path, f"{{{{ {ref.text} }}}} is only defined in a step with forEach"))
                elif rest and (len(rest) > 1 or rest[0] not in item_keys):
                    issues.append(
                        Issue(path, f"unknown template variable {ref.text!r} (grid keys: {sorted(item_keys)})")
                    )
                continue
            if head not in allowed:
                issues.append(
                    Issue(
                        path, f"unknown template variable {ref.text!r} (namespaces: params, inputs, outputs, item, run)"
                    )
                )
                continue
            names = allowed[head]
            if head == "run" and not on_exit and len(rest) == 1 and rest[0] in EXIT_RUN_VARIABLES:
                issues.append(
                    Issue(path, f"{{{{ {ref.text} }}}} is only defined in an onExit step (the steps' outcome)")
                )
                continue
            if len(rest) != 1 or (names is not None and rest[0] not in names):
                known = ", ".join(sorted(names or ())) or "none"
                issues.append(Issue(path, f"unknown template variable {ref.text!r} (known {head}: {known})"))


def validate_pipeline(spec: PipelineSpec, path: str = "spec") -> list[Issue]:
    """Every cross-field problem of a schema-valid pipeline spec."""
    issues: list[Issue] = []
    for i, name in _duplicates(p.name for p in spec.parameters):
        issues.append(Issue(f"{path}.parameters[{i}].name", f"duplicate parameter name {name!r}"))
    for i, p in enumerate(spec.parameters):
        if p.default is not None and (problem := type_error(p, p.default)):
            issues.append(Issue(f"{path}.parameters[{i}].default", problem))
    located = step_paths(spec, path)
    for i, name in _duplicates(s.name for _, s in located):
        where = located[i][0]
        issues.append(
            Issue(f"{where}.name", f"duplicate step name {name!r} (names are unique across steps and onExit)")
        )

    params = {p.name for p in spec.parameters}
    by_name = {s.name: s for s in spec.steps}
    exits = {s.name: s for s in spec.on_exit or []}
    dag = Dag.of(spec.steps)
    try:
        dag.order()
    except CycleFound as e:
        issues.append(Issue(f"{path}.steps", f"the steps form a {e}"))
        dag = Dag({n: () for n in by_name})  # keep checking the rest without the edges
    exit_dag = Dag.of(spec.on_exit or [])
    try:
        exit_dag.order()
    except CycleFound as e:
        issues.append(Issue(f"{path}.onExit", f"the onExit steps form a {e}"))
        exit_dag = Dag({n: () for n in exits})

    for sp, step in located:
        on_exit = sp.startswith(f"{path}.onExit[")
        # A step may use the steps; an onExit step may use the steps and the other onExit steps.
        visible = {**by_name, **exits} if on_exit else by_name
        for i, n in _duplicates(x.name for x in step.inputs):
            issues.append(Issue(f"{sp}.inputs[{i}].name", f"duplicate input name {n!r}"))
        for i, n in _duplicates(x.name for x in step.outputs):
            issues.append(Issue(f"{sp}.outputs[{i}].name", f"duplicate output name {n!r}"))
        for ii, inp in enumerate(step.inputs):
            if inp.step is None:
                continue
            ip = f"{sp}.inputs[{ii}]"
            if inp.step == step.name:
                issues.append(Issue(f"{ip}.step", "a step cannot read its own output"))
            elif not on_exit and inp.step in exits:
                issues.append(Issue(f"{ip}.step", _exit_reference(inp.step, "read an output of")))
            elif inp.step not in visible:
                issues.append(Issue(f"{ip}.step", f"unknown step {inp.step!r} (steps: {', '.join(visible)})"))
            elif not _unknown_component(visible[inp.step]):  # an unknown one is reported once, at its `uses`
                produced = step_outputs(visible[inp.step])
                if inp.output not in produced:
                    issues.append(
                        Issue(
                            f"{ip}.output",
                            f"step {inp.step!r} has no output {inp.output!r} (outputs: {_names(produced)})",
                        )
                    )
        for di, dep in enumerate(step.depends_on):
            if dep == step.name:
                issues.append(Issue(f"{sp}.dependsOn[{di}]", "a step cannot depend on itself"))
            elif not on_exit and dep in exits:
                issues.append(Issue(f"{sp}.dependsOn[{di}]", _exit_reference(dep, "depend on")))
            elif dep not in visible:
                issues.append(Issue(f"{sp}.dependsOn[{di}]", f"unknown step {dep!r} (steps: {', '.join(visible)})"))
        if on_exit and step.approval is not None and step.approval.required:
            issues.append(
                Issue(f"{sp}.approval", "an onExit step cannot wait for approval: it runs however the Run ended")
            )

        inputs = {x.name for x in step.inputs}
        outputs = {x.name for x in step.outputs}
        if step.uses is not None:
            required, accepted, contract_outputs, error = _component_contract(step)
            if error is not None:
                issues.append(Issue(f"{sp}.uses", error))
            else:
                assert required is not None and accepted is not None and contract_outputs is not None
                for missing in sorted(required - inputs):
                    issues.append(Issue(f"{sp}.inputs", f"component {step.uses!r} needs input {missing!r}"))
                for ii, inp in enumerate(step.inputs):
                    if inp.name not in accepted:
                        issues.append(
                            Issue(
                                f"{sp}.inputs[{ii}].name",
                                f"component {step.uses!r} takes no input {inp.name!r} (inputs: {_names(accepted)})",
                            )
                        )
                for oi, out in enumerate(step.outputs):
                    if out.name not in contract_outputs:
                        issues.append(
                            Issue(
                                f"{sp}.outputs[{oi}].name",
                                f"component {step.uses!r} has no output {out.name!r} "
                                f"(outputs: {_names(contract_outputs)})",
                            )
                        )
                outputs = contract_outputs
                issues += _check_component_config(step, sp)
        if step.resource is not None:
            issues += _check_resource_step(step, sp)
        if step.for_each is not None and step.for_each.parameter is not None:
            param = next((p for p in spec.parameters if p.name == step.for_each.parameter), None)
            fp = f"{sp}.forEach.parameter"
            if param is None:
                issues.append(Issue(fp, f"unknown parameter {step.for_each.parameter!r}"))
            elif param.type is not ParameterType.LIST:
                issues.append(Issue(fp, f"parameter {param.name!r} is {a_type(param.type)}, not a list"))
        _check_templates(step, sp, params, inputs, outputs, on_exit, issues)
        if step.when is not None:
            if on_exit:
                known, readable = set(by_name) | set(exits), set(by_name) | exit_dag.ancestors(step.name)
            else:
                known, readable = set(by_name) | set(exits), dag.ancestors(step.name)
            _check_when(step, sp, params, known, readable, on_exit, issues)

    if spec.schedule is not None:
        sc = spec.schedule
        if not croniter.is_valid(sc.cron) or len(sc.cron.split()) != 5:
            issues.append(
                Issue(
                    f"{path}.schedule.cron",
                    f"invalid cron expression {sc.cron!r} (five fields: minute hour day month weekday)",
                )
            )
        try:
            ZoneInfo(sc.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            issues.append(Issue(f"{path}.schedule.timeZone", f"unknown time zone {sc.time_zone!r}"))
    issues += _check_pod_settings(spec, path)
    return issues


_NOT_ON_RESOURCE_STEPS = {
    "inputs": "artifact inputs (no step runtime fetches them; order steps with dependsOn)",
    "outputs": "artifact outputs (no step runtime uploads them; declare resource.metrics)",
    "resources": "resources (set them in the manifest: its engine starts the pods)",
    "pod": "pod settings (set them in the manifest: its engine starts the pods)",
    "start_timeout_seconds": "startTimeoutSeconds (the operator starts no pod; timeoutSeconds bounds an attempt)",
    "for_each": "forEach (not supported yet on a resource step)",
}


def _check_resource_step(step: Step, sp: str) -> list[Issue]:
    """A resource step: its manifest and checks (resource_problems), and no field that only a pod could honour."""
    from conveyor.core.resources import resource_problems  # noqa: PLC0415

    assert step.resource is not None
    issues = [Issue(p, m) for p, m in resource_problems(step.resource, f"{sp}.resource")]
    for name, what in _NOT_ON_RESOURCE_STEPS.items():
        if getattr(step, name):
            alias = Step.model_fields[name].alias or name
            issues.append(Issue(f"{sp}.{alias}", f"step {step.name!r} is a resource step: it takes no {what}"))
    return issues


def _exit_reference(name: str, what: str) -> str:
    return f"{name!r} is an onExit step: a step cannot {what} one (onExit steps run after every step has finished)"


def _check_component_config(step: Step, sp: str) -> list[Issue]:
    """Validate `with` against the component's config model; templated values are checked at run time."""
    from conveyor.components.registry import get_component  # noqa: PLC0415

    assert step.uses is not None
    config_model = get_component(step.uses).config
    given = dict(step.with_ or {})
    templated = {k for k, v in given.items() if any("{{" in s for _, s in strings_in(v, k))}
    issues = [
        Issue(
            f"{sp}.with.{k}",
            f"component {step.uses!r} has no setting {k!r} (settings: {', '.join(sorted(config_model.model_fields))})",
        )
        for k in given
        if k not in config_model.model_fields
    ]
    if issues:
        return issues
    try:
        config_model.model_validate({k: v for k, v in given.items() if k not in templated})
    except ValidationError as e:
        for issue in issues_from_pydantic(e, prefix=f"{sp}.with"):
            field = issue.path.removeprefix(f"{sp}.with.").split(".")[0].split("[")[0]
            if field in templated:
                continue  # supplied by a template, checked once resolved
            issues.append(issue)
    return issues


# ---------------------------------------------------------------- pod settings

RESERVED_PREFIX = "conveyor.dev/"
# Labels the operator sets on every step pod besides its conveyor.dev/ ones.
RESERVED_LABELS = frozenset({"app.kubernetes.io/managed-by"})
# Variables the step runtime is given (its task, scratch, store credentials); a step cannot replace them.
RESERVED_ENV = frozenset({"TMPDIR", "HOME", "PYTHONUNBUFFERED", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})
RESERVED_ENV_PREFIX = "CONVEYOR_"
# Paths a mount may be neither at, under, nor above: the step's scratch, the runtime's install and termination
# message, the kernel's filesystems.
RESERVED_TREES = ("/tmp", "/opt/conveyor", "/dev", "/proc", "/sys")  # noqa: S108 - the scratch emptyDir
# System directories a mount may not replace (a mount below them, such as /etc/config, is fine).
SYSTEM_DIRS = ("/bin", "/etc", "/lib", "/lib64", "/sbin", "/usr", "/var")


def _normal_path(path: str) -> str:
    import posixpath  # noqa: PLC0415

    return posixpath.normpath(path).replace("//", "/")


def mount_path_problem(mount_path: str) -> str | None:
    """Why a volume cannot be mounted at `mount_path`, or None."""
    p = _normal_path(mount_path)
    if p == "/":
        return "cannot mount over / (the root filesystem stays read-only)"
    for tree in RESERVED_TREES:
        if p == tree or p.startswith(tree + "/"):
            where = "the step's scratch directory" if tree == "/tmp" else "a path the step runtime needs"  # noqa: S108
            return f"{mount_path} is at or under {tree}, {where}: mount elsewhere, e.g. /data"
        if tree.startswith(p + "/"):
            return f"{mount_path} would hide {tree}, a path the step runtime needs"
    for system in SYSTEM_DIRS:
        if p == system or system.startswith(p + "/"):
            return f"{mount_path} would replace the system directory {system}: mount below it or elsewhere"
    return None


def _check_metadata(keys: Iterable[str], path: str, what: str, reserved: frozenset[str]) -> list[Issue]:
    return [
        Issue(
            f"{path}[{key!r}]",
            f"{what} {key!r} is reserved: the operator sets the {RESERVED_PREFIX} {what}s of step pods"
            if key.startswith(RESERVED_PREFIX)
            else f"{what} {key!r} is reserved: the operator sets it on every step pod",
        )
        for key in keys
        if key.startswith(RESERVED_PREFIX) or key in reserved
    ]


def _check_pod_level(pod: PodSettings, pp: str) -> list[Issue]:
    """What one spec.pod or steps[i].pod block gets wrong on its own."""
    issues: list[Issue] = []
    for i, n in _duplicates(e.name for e in pod.env):
        issues.append(Issue(f"{pp}.env[{i}].name", f"duplicate variable {n!r}"))
    for i, e in enumerate(pod.env):
        if e.name in RESERVED_ENV or e.name.startswith(RESERVED_ENV_PREFIX):
            issues.append(
                Issue(
                    f"{pp}.env[{i}].name",
                    f"{e.name!r} is reserved: the step runtime sets it ({RESERVED_ENV_PREFIX}*, "
                    f"{', '.join(sorted(RESERVED_ENV))})",
                )
            )
    for i, n in _duplicates(v.name for v in pod.volumes):
        issues.append(Issue(f"{pp}.volumes[{i}].name", f"duplicate volume name {n!r}"))
    for i, v in enumerate(pod.volumes):
        if v.name == "scratch":
            issues.append(Issue(f"{pp}.volumes[{i}].name", "'scratch' is reserved: the step's /tmp volume"))
    for i, n in _duplicates(_normal_path(m.mount_path) for m in pod.volume_mounts):
        issues.append(Issue(f"{pp}.volumeMounts[{i}].mountPath", f"duplicate mountPath {n!r}"))
    for i, m in enumerate(pod.volume_mounts):
        if (problem := mount_path_problem(m.mount_path)) is not None:
            issues.append(Issue(f"{pp}.volumeMounts[{i}].mountPath", problem))
    for i, n in _duplicates(s.name for s in pod.image_pull_secrets):
        issues.append(Issue(f"{pp}.imagePullSecrets[{i}].name", f"duplicate imagePullSecret {n!r}"))
    for i, t in enumerate(pod.tolerations):
        if t.operator == "Exists" and t.value:
            issues.append(Issue(f"{pp}.tolerations[{i}].value", "a toleration with operator Exists takes no value"))
        if t.toleration_seconds is not None and t.effect != "NoExecute":
            issues.append(
                Issue(f"{pp}.tolerations[{i}].tolerationSeconds", "tolerationSeconds only applies to effect NoExecute")
            )
    issues += _check_metadata(pod.labels, f"{pp}.labels", "label", RESERVED_LABELS)
    issues += _check_metadata(pod.annotations, f"{pp}.annotations", "annotation", frozenset())
    return issues


def _check_mounts(pod: PodSettings, pp: str, declared: set[str], where: str) -> list[Issue]:
    return [
        Issue(
            f"{pp}.volumeMounts[{i}].name",
            f"mounts volume {m.name!r}, which is not declared in {where} (volumes: {_names(declared)})",
        )
        for i, m in enumerate(pod.volume_mounts)
        if m.name not in declared
    ]


def _check_pod_settings(spec: PipelineSpec, path: str) -> list[Issue]:
    """Pod settings at both levels: each block alone, then every mount against the volumes its step will have."""
    issues: list[Issue] = []
    defaults = {v.name for v in spec.pod.volumes} if spec.pod else set()
    if spec.pod is not None:
        issues += _check_pod_level(spec.pod, f"{path}.pod")
        issues += _check_mounts(spec.pod, f"{path}.pod", defaults, f"{path}.pod.volumes")
    for sp, step in step_paths(spec, path):
        if step.pod is None:
            continue
        pp = f"{sp}.pod"
        issues += _check_pod_level(step.pod, pp)
        own = {v.name for v in step.pod.volumes}
        issues += _check_mounts(step.pod, pp, own | defaults, f"{pp}.volumes or {path}.pod.volumes")
    return issues
