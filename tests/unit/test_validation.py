"""Every validator error, one case each: the document, the field path it must name, and the message."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conveyor.cli.documents import load_documents
from conveyor.core.support import LOCAL, unsupported
from conveyor.core.validation import InvalidSpec, parse_document, resolve_parameters

Doc = dict[str, Any]


def pipeline() -> Doc:
    """A small valid pipeline: two container steps and a parameter."""
    return {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {
            "parameters": [
                {"name": "n", "type": "integer", "default": 3},
                {"name": "items", "type": "list", "default": [1]},
            ],
            "steps": [
                {
                    "name": "make",
                    "container": {
                        "image": "python:3.11",
                        "command": ["python", "-c", "print({{ params.n }})"],
                    },
                    "outputs": [{"name": "data"}],
                },
                {
                    "name": "use",
                    "container": {"image": "python:3.11", "command": ["cat", "{{ inputs.data }}"]},
                    "inputs": [{"name": "data", "step": "make", "output": "data"}],
                },
            ],
        },
    }


def edit(fn: Callable[[Doc], None]) -> Doc:
    doc = pipeline()
    fn(doc)
    return doc


def steps(doc: Doc) -> list[Doc]:
    return doc["spec"]["steps"]  # type: ignore[no-any-return]


def _set(path: list[Any], value: Any) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        target: Any = doc
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value

    return apply


def _cycle(doc: Doc) -> None:
    steps(doc)[0]["dependsOn"] = ["use"]


def _three_cycle(doc: Doc) -> None:
    steps(doc).append({"name": "third", "container": {"image": "i", "command": ["x"]}, "dependsOn": ["use"]})
    steps(doc)[0]["dependsOn"] = ["third"]


def _dup_step(doc: Doc) -> None:
    steps(doc).append(copy.deepcopy(steps(doc)[1]))


def _when(expr: str) -> Callable[[Doc], None]:
    return _set(["spec", "steps", 1, "when"], expr)


CASES: list[tuple[str, Doc, str, str]] = [
    # id, document, path named, message fragment
    ("unknown-field", edit(_set(["spec", "steps", 0, "retry"], 3)), "spec.steps[0].retry", "unknown field"),
    ("missing-steps", edit(lambda d: d["spec"].pop("steps")), "spec.steps", "required field is missing"),
    ("empty-steps", edit(_set(["spec", "steps"], [])), "spec.steps", "at least 1"),
    (
        "negative-retries",
        edit(_set(["spec", "steps", 0, "retries"], {"limit": -1})),
        "spec.steps[0].retries.limit",
        "greater than or equal to 0",
    ),
    (
        "negative-timeout",
        edit(_set(["spec", "steps", 0, "timeoutSeconds"], -5)),
        "spec.steps[0].timeoutSeconds",
        "greater than or equal to 1",
    ),
    (
        "negative-run-timeout",
        edit(_set(["spec", "timeoutSeconds"], 0)),
        "spec.timeoutSeconds",
        "greater than or equal to 1",
    ),
    (
        "bad-step-name",
        edit(_set(["spec", "steps", 0, "name"], "Make_It")),
        "spec.steps[0].name",
        "should match pattern",
    ),
    (
        "uses-and-container",
        edit(_set(["spec", "steps", 0, "uses"], "train")),
        "spec.steps[0]",
        "exactly one of uses, container or resource",
    ),
    (
        "neither-uses-nor-container",
        edit(lambda d: steps(d)[0].pop("container")),
        "spec.steps[0]",
        "exactly one of uses, container or resource",
    ),
    (
        "input-step-and-uri",
        edit(_set(["spec", "steps", 1, "inputs", 0, "uri"], "file:///x")),
        "spec.steps[1].inputs[0]",
        "exactly one of step or uri",
    ),
    (
        "input-step-without-output",
        edit(lambda d: steps(d)[1]["inputs"][0].pop("output")),
        "spec.steps[1].inputs[0]",
        "step and output go together",
    ),
    (
        "bad-uri-scheme",
        edit(_set(["spec", "steps", 1, "inputs", 0], {"name": "data", "uri": "ftp://x/y"})),
        "spec.steps[1].inputs[0].uri",
        "should match pattern",
    ),
    (
        "fanout-two-sources",
        edit(_set(["spec", "steps", 0, "forEach"], {"items": [1], "parameter": "items"})),
        "spec.steps[0].forEach",
        "exactly one of items, parameter or grid",
    ),
    ("duplicate-step", edit(_dup_step), "spec.steps[2].name", "duplicate step name 'use'"),
    (
        "duplicate-param",
        edit(lambda d: d["spec"]["parameters"].append({"name": "n"})),
        "spec.parameters[2].name",
        "duplicate parameter name 'n'",
    ),
    (
        "duplicate-input",
        edit(lambda d: steps(d)[1]["inputs"].append({"name": "data", "uri": "file:///x"})),
        "spec.steps[1].inputs[1].name",
        "duplicate input name 'data'",
    ),
    (
        "duplicate-output",
        edit(lambda d: steps(d)[0]["outputs"].append({"name": "data"})),
        "spec.steps[0].outputs[1].name",
        "duplicate output name 'data'",
    ),
    (
        "default-type-mismatch",
        edit(_set(["spec", "parameters", 0, "default"], "three")),
        "spec.parameters[0].default",
        "expected an integer, got str",
    ),
    (
        "bool-is-not-integer",
        edit(_set(["spec", "parameters", 0, "default"], True)),
        "spec.parameters[0].default",
        "expected an integer, got bool",
    ),
    (
        "unknown-input-step",
        edit(_set(["spec", "steps", 1, "inputs", 0, "step"], "mkae")),
        "spec.steps[1].inputs[0].step",
        "unknown step 'mkae'",
    ),
    (
        "unknown-output",
        edit(_set(["spec", "steps", 1, "inputs", 0, "output"], "model")),
        "spec.steps[1].inputs[0].output",
        "step 'make' has no output 'model'",
    ),
    (
        "self-input",
        edit(_set(["spec", "steps", 1, "inputs", 0, "step"], "use")),
        "spec.steps[1].inputs[0].step",
        "cannot read its own output",
    ),
    (
        "unknown-depends-on",
        edit(_set(["spec", "steps", 1, "dependsOn"], ["nope"])),
        "spec.steps[1].dependsOn[0]",
        "unknown step 'nope'",
    ),
    (
        "self-depends-on",
        edit(_set(["spec", "steps", 1, "dependsOn"], ["use"])),
        "spec.steps[1].dependsOn[0]",
        "cannot depend on itself",
    ),
    ("cycle", edit(_cycle), "spec.steps", "cycle: "),
    ("cycle-named", edit(_three_cycle), "spec.steps", "make → use → third → make"),
    (
        "unknown-param-template",
        edit(_set(["spec", "steps", 0, "container", "command", 2], "{{ params.nn }}")),
        "spec.steps[0].container.command[2]",
        "unknown template variable 'params.nn'",
    ),
    (
        "unknown-namespace-template",
        edit(_set(["spec", "steps", 0, "container", "command", 2], "{{ secrets.key }}")),
        "spec.steps[0].container.command[2]",
        "unknown template variable 'secrets.key'",
    ),
    (
        "malformed-template",
        edit(_set(["spec", "steps", 0, "container", "command", 2], "{{ params.n + 1 }}")),
        "spec.steps[0].container.command[2]",
        "malformed template",
    ),
    (
        "undeclared-input-template",
        edit(_set(["spec", "steps", 1, "container", "command", 1], "{{ inputs.model }}")),
        "spec.steps[1].container.command[1]",
        "known inputs: data",
    ),
    (
        "undeclared-output-template",
        edit(_set(["spec", "steps", 0, "container", "env"], [{"name": "OUT", "value": "{{ outputs.x }}"}])),
        "spec.steps[0].container.env[0].value",
        "unknown template variable 'outputs.x'",
    ),
    (
        "item-outside-foreach",
        edit(_set(["spec", "steps", 0, "container", "args"], ["{{ item }}"])),
        "spec.steps[0].container.args[0]",
        "only defined in a step with forEach",
    ),
    (
        "unknown-grid-key",
        edit(
            lambda d: steps(d)[0].update(
                forEach={"grid": {"depth": [1, 2]}}, container={"image": "i", "command": ["{{ item.width }}"]}
            )
        ),
        "spec.steps[0].container.command[0]",
        "grid keys",
    ),
    (
        "unknown-run-variable",
        edit(_set(["spec", "steps", 0, "container", "args"], ["{{ run.owner }}"])),
        "spec.steps[0].container.args[0]",
        "known run: id, name, namespace",
    ),
    ("when-syntax", edit(_when("params.n >")), "spec.steps[1].when", "invalid expression"),
    ("when-unknown-param", edit(_when("params.m > 1")), "spec.steps[1].when", "unknown parameter 'm'"),
    (
        "when-unknown-step",
        edit(_when("steps.train.metrics.auc > 0.5")),
        "spec.steps[1].when",
        "unknown step 'train'",
    ),
    (
        "when-not-upstream",
        edit(lambda d: steps(d)[0].update(when="steps.use.phase == 'Succeeded'")),
        "spec.steps[0].when",
        "not upstream of 'make'",
    ),
    (
        "when-unknown-variable",
        edit(_when("inputs.data == 'x'")),
        "spec.steps[1].when",
        "unknown variable 'inputs'",
    ),
    (
        "foreach-unknown-param",
        edit(_set(["spec", "steps", 0, "forEach"], {"parameter": "nope"})),
        "spec.steps[0].forEach.parameter",
        "unknown parameter 'nope'",
    ),
    (
        "foreach-param-not-list",
        edit(_set(["spec", "steps", 0, "forEach"], {"parameter": "n"})),
        "spec.steps[0].forEach.parameter",
        "is an integer, not a list",
    ),
    (
        "bad-cron",
        edit(_set(["spec", "schedule"], {"cron": "61 * * * *"})),
        "spec.schedule.cron",
        "invalid cron expression",
    ),
    (
        "cron-six-fields",
        edit(_set(["spec", "schedule"], {"cron": "0 0 * * * *"})),
        "spec.schedule.cron",
        "five fields",
    ),
    (
        "bad-time-zone",
        edit(_set(["spec", "schedule"], {"cron": "0 3 * * *", "timeZone": "Mars/Olympus"})),
        "spec.schedule.timeZone",
        "unknown time zone",
    ),
    (
        "unknown-component",
        edit(lambda d: steps(d)[0].update(uses="trian", container=None) or steps(d)[0].pop("container")),
        "spec.steps[0].uses",
        "unknown component 'trian'",
    ),
]


@pytest.mark.parametrize(("doc", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_error_names_its_field(doc: Doc, path: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_document(doc, "pipeline.yaml")
    matching = [i for i in raised.value.issues if i.path == path]
    assert matching, f"no issue at {path}; got {raised.value.issues}"
    assert any(fragment in i.message for i in matching), f"{fragment!r} not in {matching}"
    assert str(raised.value).startswith("pipeline.yaml: ")


def test_the_base_document_is_valid() -> None:
    """Guards the table: each case fails because of its edit, not because the base is broken."""
    assert parse_document(pipeline()).kind == "Pipeline"


def _component_step(**overrides: Any) -> Doc:
    step = {
        "name": "train",
        "uses": "train",
        "inputs": [{"name": "train", "step": "make", "output": "data"}],
        "with": {"label": "y", "estimator": "sklearn.linear_model.LogisticRegression"},
    }
    step.update(overrides)
    return edit(lambda d: steps(d).__setitem__(1, step))


COMPONENT_CASES = [
    ("missing-required-input", _component_step(inputs=[]), "spec.steps[1].inputs", "needs input 'train'"),
    (
        "unknown-input",
        _component_step(
            inputs=[
                {"name": "train", "step": "make", "output": "data"},
                {"name": "extra", "uri": "file:///x"},
            ]
        ),
        "spec.steps[1].inputs[1].name",
        "takes no input 'extra'",
    ),
    (
        "unknown-output",
        _component_step(outputs=[{"name": "weights"}]),
        "spec.steps[1].outputs[0].name",
        "has no output 'weights'",
    ),
    (
        "unknown-setting",
        _component_step(**{"with": {"label": "y", "estimator": "x", "n_estimator": 3}}),
        "spec.steps[1].with.n_estimator",
        "has no setting 'n_estimator'",
    ),
    (
        "missing-setting",
        _component_step(**{"with": {"estimator": "x"}}),
        "spec.steps[1].with.label",
        "required field is missing",
    ),
]


@pytest.mark.parametrize(
    ("doc", "path", "fragment"), [c[1:] for c in COMPONENT_CASES], ids=[c[0] for c in COMPONENT_CASES]
)
def test_component_contract_errors(doc: Doc, path: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_document(doc)
    assert any(i.path == path and fragment in i.message for i in raised.value.issues), raised.value.issues


def test_templated_component_settings_are_checked_once_resolved() -> None:
    doc = _component_step(**{"with": {"label": "y", "estimator": "x", "seed": "{{ params.n }}"}})
    assert parse_document(doc).kind == "Pipeline"


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


DOCUMENT_CASES = [
    ("not-a-mapping", ["a", "b"], "(document)", "expected a mapping"),
    (
        "unknown-kind",
        {"apiVersion": "conveyor.dev/v1alpha1", "kind": "Pipe", "spec": {}},
        "kind",
        "unknown kind 'Pipe'",
    ),
    ("kind-a-list", {**pipeline(), "kind": ["Pipeline"]}, "kind", "unknown kind ['Pipeline']"),
    ("kind-a-mapping", {**pipeline(), "kind": {"a": 1}}, "kind", "unknown kind {'a': 1}"),
    (
        "nested-too-deep",
        edit(lambda d: d["spec"]["steps"][0].update({"with": _nested(70)})),
        "(document)",
        "nested more than 64 levels deep",
    ),
    (
        "wrong-api-version",
        {**pipeline(), "apiVersion": "conveyor.dev/v2"},
        "apiVersion",
        "unsupported apiVersion",
    ),
    (
        "run-without-pipeline",
        {"apiVersion": "conveyor.dev/v1alpha1", "kind": "Run", "spec": {}},
        "spec",
        "exactly one of pipelineRef or pipelineSpec",
    ),
    (
        "run-inline-invalid",
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "Run",
            "spec": {"pipelineSpec": edit(_cycle)["spec"]},
        },
        "spec.pipelineSpec.steps",
        "cycle",
    ),
    (
        "run-unknown-param",
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "Run",
            "spec": {"pipelineSpec": pipeline()["spec"], "parameters": {"m": 1}},
        },
        "spec.parameters.m",
        "unknown parameter",
    ),
    (
        "run-param-type",
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "Run",
            "spec": {"pipelineSpec": pipeline()["spec"], "parameters": {"n": "x"}},
        },
        "spec.parameters.n",
        "expected an integer",
    ),
    (
        "md-min-over-max",
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "ModelDeployment",
            "spec": {
                "model": {"uri": "s3://b/m", "digest": "sha256:" + "a" * 64},
                "autoscaling": {"minReplicas": 5, "maxReplicas": 2},
            },
        },
        "spec.autoscaling",
        "minReplicas must not exceed maxReplicas",
    ),
    (
        "md-uri-without-digest",
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "ModelDeployment",
            "spec": {"model": {"uri": "s3://b/m"}},
        },
        "spec.model",
        "needs its digest",
    ),
    (
        "md-two-sources",
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "ModelDeployment",
            "spec": {
                "model": {
                    "uri": "s3://b/m",
                    "digest": "sha256:" + "a" * 64,
                    "run": {"name": "r", "step": "train"},
                }
            },
        },
        "spec.model",
        "exactly one of uri, run or pipeline",
    ),
    (
        "md-canary-without-steps",
        {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "ModelDeployment",
            "spec": {"model": {"pipeline": {"name": "p"}}, "rollout": {"strategy": "Canary"}},
        },
        "spec.rollout",
        "needs steps",
    ),
]


@pytest.mark.parametrize(
    ("doc", "path", "fragment"), [c[1:] for c in DOCUMENT_CASES], ids=[c[0] for c in DOCUMENT_CASES]
)
def test_document_errors(doc: Any, path: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_document(doc)
    assert any(i.path == path and fragment in i.message for i in raised.value.issues), raised.value.issues


def test_required_parameter_without_value() -> None:
    doc = edit(lambda d: d["spec"]["parameters"].append({"name": "required_one", "type": "string"}))
    spec = parse_document(doc).spec
    values, issues = resolve_parameters(spec, {}, "parameters")  # type: ignore[arg-type]
    assert [str(i) for i in issues] == ["parameters.required_one: required parameter has no value (it has no default)"]
    values, issues = resolve_parameters(spec, {"required_one": "x"})  # type: ignore[arg-type]
    assert issues == [] and values == {"n": 3, "items": [1], "required_one": "x"}



def test_a_run_with_a_wrongly_typed_default_is_told_once_at_the_declaration() -> None:
    """Found by the fuzz tier: the default's type error was also reported at spec.parameters.k, an override
    the Run never wrote."""
    run = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": "r"},
        "spec": {
            "pipelineSpec": {
                "parameters": [{"name": "k", "type": "string", "default": []}],
                "steps": [{"name": "a", "container": {"image": "local", "command": ["true"]}}],
            }
        },
    }
    with pytest.raises(InvalidSpec) as raised:
        parse_document(run)
    assert [str(i) for i in raised.value.issues] == [
        "spec.pipelineSpec.parameters[0].default: expected a string, got list []"
    ]
    run["spec"]["parameters"] = {"k": 3}  # type: ignore[index]
    run["spec"]["pipelineSpec"]["parameters"][0]["default"] = "fine"  # type: ignore[index]
    with pytest.raises(InvalidSpec) as raised:
        parse_document(run)
    assert [str(i) for i in raised.value.issues] == ["spec.parameters.k: expected a string, got int 3"]

UNSUPPORTED_CASES = [
    ("schedule", _set(["spec", "schedule"], {"cron": "0 3 * * *"}), "spec.schedule"),
    ("triggers", _set(["spec", "triggers"], [{"s3": {"uri": "s3://b/p/"}}]), "spec.triggers"),
    ("approval", _set(["spec", "steps", 1, "approval"], {"required": True}), "spec.steps[1].approval"),
    (
        "s3-input",
        _set(["spec", "steps", 1, "inputs", 0], {"name": "data", "uri": "s3://b/k"}),
        "spec.steps[1].inputs[0].uri",
    ),
]


@pytest.mark.parametrize(("mutate", "path"), [c[1:] for c in UNSUPPORTED_CASES], ids=[c[0] for c in UNSUPPORTED_CASES])
def test_unsupported_features_are_rejected_not_ignored(mutate: Callable[[Doc], None], path: str) -> None:
    spec = parse_document(edit(mutate)).spec  # valid as a document...
    issues = unsupported(spec, LOCAL)  # type: ignore[arg-type]
    assert [i.path for i in issues] == [path]  # ...but the local runner says it cannot honour it
    assert "not supported yet by the local runner" in issues[0].message
    assert unsupported(parse_document(pipeline()).spec, LOCAL) == []  # type: ignore[arg-type]


YAML_CASES = [
    ("malformed", "kind: Pipeline\nspec: [unclosed\n", "line 3", "malformed YAML"),
    ("empty", "", "(document)", "holds no document"),
    ("bad-second-document", "apiVersion: conveyor.dev/v1alpha1\nkind: Pipe\n", "kind", "unknown kind"),
    ("kind-a-list", "kind: [Pipeline]\n", "kind", "unknown kind ['Pipeline']"),
    ("too-big", "kind: Pipeline\n" + "# padding\n" * 160_000, "(file)", "over the limit of 1,572,864 bytes"),
    ("nested-too-deep", "a: " + "[" * 65 + "]" * 65 + "\n", "line 1, column 67", "nested more than 64 levels"),
    (
        "alias-bomb",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)),
        "line 6",
        "aliases expand the file to more than 1,000,000 nodes",
    ),
]


@pytest.mark.parametrize(("text", "path", "fragment"), [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_files_errors_name_file_and_place(tmp_path: Path, text: str, path: str, fragment: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(InvalidSpec) as raised:
        load_documents(f)
    assert raised.value.source == str(f)
    assert any(i.path.startswith(path) and fragment in i.message for i in raised.value.issues), raised.value.issues


def test_an_unknown_component_is_reported_once_not_again_by_its_readers() -> None:
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "u"},
        "spec": {
            "steps": [
                {"name": "a", "uses": "ingset", "with": {"source": "sklearn://iris"}},
                {
                    "name": "b",
                    "uses": "split",
                    "inputs": [{"name": "dataset", "step": "a", "output": "dataset"}],
                    "with": {"label": "target"},
                },
            ]
        },
    }
    with pytest.raises(InvalidSpec) as raised:
        parse_document(doc)
    assert [i.path for i in raised.value.issues] == ["spec.steps[0].uses"]
    assert "unknown component 'ingset'" in raised.value.issues[0].message


@pytest.mark.parametrize(("depth", "problem"), [(64, None), (65, "nested more than 64 levels deep (the limit)")])
def test_the_operators_nesting_check_matches_the_clis(depth: int, problem: str | None) -> None:
    """The operator gets bodies parsed by the API server and checks them with the limit the CLI's loader
    applies to YAML: a spec the CLI accepts, the operator accepts."""
    from conveyor.core.documents import load_yaml, object_problem

    body = {"spec": _nested(depth - 1)}  # `depth` collections: the body mapping and depth - 1 lists
    assert object_problem(body) == problem
    text = "spec: " + "[" * (depth - 1) + "leaf" + "]" * (depth - 1) + "\n"
    if problem is None:
        assert load_yaml(text) == [body]
    else:
        with pytest.raises(ValueError, match="nested more than 64 levels"):
            load_yaml(text)
