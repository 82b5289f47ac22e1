"""The Python SDK: every example compiles to its YAML, mistakes are named by file:line, the YAML is stable."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from conveyor import sdk
from conveyor.api.pipeline import ParameterType, Pipeline
from conveyor.cli.documents import load_documents
from conveyor.cli.main import main
from conveyor.core.record import spec_digest
from conveyor.core.validation import InvalidSpec
from conveyor.sdk.compiler import HEADER, canonical, load, same, to_yaml
from conveyor.sdk.refs import MetricRef

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").rglob("pipeline.yaml"))


def test_every_example_has_a_python_version() -> None:
    assert len(EXAMPLES) >= 5
    assert [p for p in EXAMPLES if not (p / "pipeline.py").is_file()] == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_example_compiles_to_the_pipeline_of_its_yaml(example: Path) -> None:
    (from_yaml,) = load_documents(example / "pipeline.yaml")
    assert isinstance(from_yaml, Pipeline)
    compiled = load(f"{example / 'pipeline.py'}")
    # the same document, key order included (a grid's key order is part of its meaning)
    assert json.dumps(compiled.to_wire()) == json.dumps(from_yaml.to_wire())
    assert spec_digest(compiled.spec) == spec_digest(from_yaml.spec)
    assert same(compiled, from_yaml)
    # and the YAML it writes reads back, through `conveyor validate`'s reader, as that same Pipeline
    out = example / "pipeline.yaml"
    text = to_yaml(compiled)
    (read_back,) = yaml.safe_load_all(text)
    assert Pipeline.model_validate(read_back).to_wire() == from_yaml.to_wire(), out


def test_compiled_yaml_is_minimal_ordered_and_free_of_volatile_text() -> None:
    text = to_yaml(load(str(ROOT / "examples/breast-cancer-tuning/pipeline.py")))
    assert text.startswith(HEADER)
    doc = yaml.safe_load(text)
    assert list(doc) == ["apiVersion", "kind", "metadata", "spec"]
    train = next(s for s in doc["spec"]["steps"] if s["name"] == "train")
    assert list(train) == ["name", "uses", "with", "inputs", "forEach"]  # schema order; defaults left out
    assert list(train["forEach"]["grid"]) == ["max_depth", "n_estimators", "max_features"]  # as written
    assert "retries" not in train and "cache" not in train and "dependsOn" not in train
    assert doc["spec"]["parameters"][0] == {"name": "seed", "type": "integer", "default": 42}
    for volatile in ("/tmp", str(ROOT), "2026", "created"):
        assert volatile not in text


def test_compiling_twice_gives_the_same_bytes() -> None:
    path = str(ROOT / "examples/breast-cancer/pipeline.py")
    assert to_yaml(load(path)) == to_yaml(load(path))


def test_a_pipeline_with_every_setting_survives_the_yaml(tmp_path: Path) -> None:
    """Everything the YAML can say, said in Python: compiled, read back by `conveyor validate`, equal."""
    source = tmp_path / "everything.py"
    source.write_text(
        textwrap.dedent(
            """
            from conveyor import sdk

            @sdk.pipeline(
                name="everything",
                namespace="ml",
                labels={"team": "risk"},
                fail_fast=False,
                timeout_seconds=3600,
                parallelism=4,
                max_concurrent_runs=2,
                schedule="*/30 * * * *",
                triggers=[sdk.on_s3("s3://data/new/", poll_seconds=30, parameters={"deploy": True}),
                          sdk.on_drift("scorer")],
            )
            def everything(
                deploy: bool = False,
                seeds: list[int] = sdk.param([1, 2], "one trial per seed"),
                rate: float = 0.1,
                mode: str = sdk.param(description="required: no default"),
            ) -> None:
                '''Every feature at once.

                This second paragraph is for people reading the code, not for the spec.'''
                data = sdk.step("ingest", uses="ingest", with_={"source": "sklearn://iris"}, cache=False)
                prep = sdk.step(
                    "prep",
                    image="python:3.11",
                    command=["python", "-c", "import shutil,sys; shutil.copy(sys.argv[1], sys.argv[2])"],
                    args=[sdk.input_path("raw"), sdk.output_path("clean"), f"--rate={rate}", sdk.run_name],
                    env={"MODE": mode, "RUN": sdk.run_id},
                    inputs={"raw": data.outputs.dataset, "ref": sdk.uri("https://example.com/ref.csv", digest="sha256:" + "a" * 64)},
                    outputs=["clean"],
                    resources=sdk.Resources(cpu="500m", memory="1Gi", gpu=1),
                    timeout_seconds=600,
                    start_timeout_seconds=120,
                    retries=3,
                )
                trials = sdk.step(
                    "train",
                    uses="train",
                    for_each=seeds,
                    max_concurrency=2,
                    inputs={"train": prep.outputs.clean},
                    with_={"label": "target", "estimator": "sklearn.linear_model.LogisticRegression",
                           "seed": sdk.item},
                    retries=sdk.RetryPolicy(limit=2, backoff=sdk.Backoff(initial_seconds=2, factor=3, max_seconds=60)),
                )
                sdk.step(
                    "publish",
                    image="busybox",
                    command=["echo", "ok"],
                    inputs={"models": trials.outputs.model, "clean": prep},
                    when=(deploy & (trials.metrics.accuracy >= 0.9)) | ~(rate < 0.5),
                    approval="check the metrics first",
                )
                sdk.step("report", image="busybox", command=["true"], when="params.deploy", depends_on=["publish"])
            """
        )
    )
    pipeline = load(f"{source}:everything")
    spec = pipeline.spec
    assert pipeline.metadata == {"name": "everything", "namespace": "ml", "labels": {"team": "risk"}}
    assert spec.description == "Every feature at once."
    assert [p.type.value for p in spec.parameters] == ["boolean", "list", "number", "string"]
    assert spec.parameters[3].default is None and spec.parameters[3].description == "required: no default"
    assert spec.schedule is not None and spec.schedule.cron == "*/30 * * * *"
    assert spec.triggers[0].s3 is not None and spec.triggers[0].s3.poll_seconds == 30
    assert spec.triggers[1].drift is not None and spec.triggers[1].drift.model_deployment == "scorer"
    assert (spec.fail_fast, spec.timeout_seconds, spec.parallelism, spec.max_concurrent_runs) == (False, 3600, 4, 2)
    ingest, prep, train, publish, report = spec.steps
    assert ingest.cache.enabled is False
    assert prep.container is not None
    assert prep.container.args == [
        "{{ inputs.raw }}",
        "{{ outputs.clean }}",
        "--rate={{ params.rate }}",
        "{{ run.name }}",
    ]
    assert [(e.name, e.value) for e in prep.container.env] == [("MODE", "{{ params.mode }}"), ("RUN", "{{ run.id }}")]
    assert [(i.name, i.step, i.output, i.uri) for i in prep.inputs] == [
        ("raw", "ingest", "dataset", None),
        ("ref", None, None, "https://example.com/ref.csv"),
    ]
    assert prep.retries.limit == 3 and prep.resources is not None and prep.resources.gpu == 1
    assert (prep.timeout_seconds, prep.start_timeout_seconds) == (600, 120)
    assert train.for_each is not None and train.for_each.parameter == "seeds" and train.for_each.max_concurrency == 2
    assert train.with_ is not None and train.with_["seed"] == "{{ item }}"
    assert train.retries.backoff.factor == 3
    assert publish.when == "params.deploy && steps.train.metrics.accuracy >= 0.9 || !(params.rate < 0.5)"
    assert publish.depends_on == []  # train is upstream already, through its input
    assert [(i.step, i.output) for i in publish.inputs] == [("train", "model"), ("prep", "clean")]
    assert publish.approval is not None and publish.approval.message == "check the metrics first"
    assert report.depends_on == ["publish"] and report.when == "params.deploy"
    out = tmp_path / "everything.yaml"
    assert main(["compile", f"{source}:everything", "-o", str(out)]) == 0
    (read_back,) = load_documents(out)
    assert isinstance(read_back, Pipeline) and same(read_back, pipeline)


def test_a_metric_read_in_when_makes_the_step_wait_for_its_step(tmp_path: Path) -> None:
    source = tmp_path / "gated.py"
    source.write_text(
        textwrap.dedent(
            """
            from conveyor import sdk

            @sdk.pipeline
            def gated(min_auc: float = 0.9) -> None:
                data = sdk.step("ingest", uses="ingest", with_={"source": "sklearn://breast_cancer"})
                check = sdk.step("validate", uses="validate", inputs={"dataset": data.outputs.dataset},
                                 with_={"label": "target"})
                sdk.step("deploy", image="busybox", command=["true"],
                         when=check.metrics.rows > 100, depends_on=[data])
                sdk.step("notify", image="busybox", command=["true"], when=check.metrics["rows"] == min_auc)
            """
        )
    )
    _, _, deploy, notify = load(str(source)).spec.steps
    assert deploy.depends_on == ["ingest", "validate"]
    assert deploy.when == "steps.validate.metrics.rows > 100"
    assert notify.depends_on == ["validate"] and notify.when == "steps.validate.metrics.rows == params.min_auc"


def test_hyphenated_step_names_are_read_with_brackets_in_conditions() -> None:
    metric = MetricRef("split-validation", "rows")
    assert str(metric >= 3) == 'steps["split-validation"].metrics.rows >= 3'
    assert str(sdk.ParamRef("x", ParameterType.STRING) == "a b") == 'params.x == "a b"'


def test_a_placeholder_refuses_to_be_read_as_a_python_value() -> None:
    seed = sdk.ParamRef("seed", ParameterType.INTEGER)
    with pytest.raises(TypeError, match="parameter 'seed' has no value while the pipeline is built"):
        bool(seed)
    with pytest.raises(TypeError, match="has no value"):
        bool(seed > 3)
    assert f"--seed={seed}" == "--seed={{ params.seed }}"


# ------------------------------------------------------------------ mistakes, named where they were written

HEAD = """\
from conveyor import sdk


@sdk.pipeline
def p(seed: int = 42) -> None:
    data = sdk.step("ingest", uses="ingest", with_={"source": "sklearn://iris"})
"""

# (id, lines after HEAD, with `#<` marking the line the error must name, text the message must hold)
MISTAKES = [
    ("unknown component", ['    sdk.step("t", uses="trian")  #<'], "unknown component 'trian'; known components:"),
    (
        "unknown output",
        ["    x = data.outputs.datset  #<"],
        "step 'ingest' has no output 'datset' (outputs: dataset, report)",
    ),
    (
        "field out of range",
        [
            '    sdk.step("s", uses="split", inputs={"dataset": data.outputs.dataset},  #<',
            "             timeout_seconds=0)",
        ],
        "spec.steps[1].timeoutSeconds: Input should be greater than or equal to 1",
    ),
    (
        "bad step name",
        ['    sdk.step("Bad_Name", uses="ingest")  #<'],
        "spec.steps[1].name: String should match pattern",
    ),
    (
        "unknown setting",
        ['    sdk.step("s", uses="split", inputs={"dataset": data.outputs.dataset}, with_={"lable": "y"})  #<'],
        "spec.steps[1].with.lable: component 'split' has no setting 'lable'",
    ),
    (
        "missing input",
        ['    sdk.step("s", uses="split", with_={"label": "y"})  #<'],
        "spec.steps[1].inputs: component 'split' needs input 'dataset'",
    ),
    (
        "wrong input name",
        ['    sdk.step("s", uses="split", inputs={"data": data.outputs.dataset})  #<'],
        "component 'split' takes no input 'data'",
    ),
    (
        "unknown template",
        ['    sdk.step("c", image="busybox", command=["echo", "{{ params.sed }}"])  #<'],
        "unknown template variable 'params.sed' (known params: seed)",
    ),
    (
        "item outside a fan-out",
        ['    sdk.step("c", image="busybox", command=["echo", sdk.item])  #<'],
        "{{ item }} is only defined in a step with forEach",
    ),
    (
        "cycle closed by after",
        [
            '    a = sdk.step("a", image="busybox", command=["true"])',
            '    b = sdk.step("b", image="busybox", command=["true"], depends_on=[a])',
            "    a.after(b)  #<",
        ],
        "the steps would form a cycle: a → b → a",
    ),
    (
        "cycle through names",
        [
            '    sdk.step("a", image="busybox", command=["true"], depends_on=["b"])  #<',
            '    sdk.step("b", image="busybox", command=["true"], depends_on=["a"])',
        ],
        "spec.steps: the steps form a cycle",
    ),
    (
        "unknown dependency",
        ['    sdk.step("a", image="busybox", command=["true"], depends_on=["nope"])  #<'],
        "spec.steps[1].dependsOn[0]: unknown step 'nope'",
    ),
    (
        "duplicate step",
        ['    sdk.step("ingest", uses="ingest", with_={"source": "sklearn://wine"})  #<'],
        "duplicate step name 'ingest' (first at ",
    ),
    (
        "uses and image",
        ['    sdk.step("a", uses="ingest", image="busybox", command=["true"])  #<'],
        "a step needs exactly one of uses= (a built-in component) or image= and command=",
    ),
    (
        "output in with_",
        [
            '    sdk.step("a", uses="validate", inputs={"dataset": data.outputs.dataset}, with_={"label": data.outputs.dataset})  #<'
        ],
        "output 'dataset' of step 'ingest' goes in inputs=, not in with_ or a command",
    ),
    (
        "when reads a step that is not upstream",
        [
            '    sdk.step("a", image="busybox", command=["true"])',
            '    sdk.step("b", image="busybox", command=["true"], when="steps.a.metrics.x > 1")  #<',
        ],
        "reads step 'a', which is not upstream of 'b': add it to dependsOn",
    ),
    (
        "invalid CEL",
        ['    sdk.step("b", image="busybox", command=["true"], when="params.seed >")  #<'],
        "spec.steps[1].when: invalid expression",
    ),
    (
        "fan-out over a non-list parameter",
        ['    sdk.step("b", image="busybox", command=["true"], for_each=seed)  #<'],
        "parameter 'seed' is an integer, not a list",
    ),
    (
        "max_concurrency without a fan-out",
        ['    sdk.step("b", image="busybox", command=["true"], max_concurrency=2)  #<'],
        "max_concurrency limits a fan-out",
    ),
    (
        "python if on a parameter",
        ["    if seed:  #<", "        pass"],
        "TypeError: parameter 'seed' has no value while the pipeline is built",
    ),
    ("python error", ["    print(undefined_name)  #<"], "NameError: name 'undefined_name' is not defined"),
    (
        "a module the pipeline imports is missing",
        ["    import no_such_dependency_xyz  #<"],
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz'",
    ),
    ("syntax error", ["    sdk.step(  #<"], "invalid Python"),
    (
        "input of another kind",
        ['    sdk.step("b", image="busybox", command=["true"], inputs={"x": 3})  #<'],
        "input 'x' must be a step's output, a step, or a URI, not int 3",
    ),
]


def _write_mistake(tmp_path: Path, lines: list[str]) -> tuple[Path, int]:
    body = HEAD + "\n".join(line.replace("  #<", "") for line in lines) + "\n"
    marked = next(i for i, line in enumerate(lines) if line.endswith("#<"))
    path = tmp_path / "mistake.py"
    path.write_text(body)
    return path, HEAD.count("\n") + marked + 1


@pytest.mark.parametrize(("lines", "message"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_named_by_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path, line = _write_mistake(tmp_path, lines)
    with pytest.raises(InvalidSpec) as raised:
        load(f"{path}:p")
    assert isinstance(raised.value, sdk.PipelineError), raised.value
    text = str(raised.value)
    assert f"{path}:{line}: " in text and message in text, text


@pytest.mark.parametrize(
    ("signature", "line", "message"),
    [
        ("seed: dict = {}", 6, "parameter 'seed': annotate it as str, int, float, bool or list"),
        ('seed: int = "x"', 6, "spec.parameters[0].default: expected an integer, got str 'x'"),
        ("seed: int | None = None", 6, "a parameter is never None: one without a default is required"),
        ("*seeds: int", 6, "a pipeline parameter needs a name and a type, not *seeds"),
        ("seed: int = 1,\n    bad: str = sdk.param(type='text')", 7, "spec.parameters[1].type: Input should be"),
    ],
)
def test_a_bad_parameter_is_named_at_its_line(tmp_path: Path, signature: str, line: int, message: str) -> None:
    path = tmp_path / "params.py"
    path.write_text(
        "from conveyor import sdk\n\n\n@sdk.pipeline\ndef p(\n    "
        + signature
        + ',\n) -> None:\n    sdk.step("a", uses="ingest", with_={"source": "sklearn://iris"})\n'
    )
    with pytest.raises(InvalidSpec) as raised:
        load(str(path))
    text = str(raised.value)
    assert f"{path}:{line}: " in text and message in text, text


@pytest.mark.parametrize(
    ("decorator", "message"),
    [
        ('@sdk.pipeline(schedule="every night")', "spec.schedule.cron: invalid cron expression 'every night'"),
        ('@sdk.pipeline(schedule=sdk.Schedule(cron="0 3 * * *", time_zone="Mars/Base"))', "unknown time zone"),
        ('@sdk.pipeline(name="Not A Name")', "metadata.name: pipeline name 'Not A Name' is not a DNS label"),
        ("@sdk.pipeline(parallelism=0)", "spec.parallelism: Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_pipeline_setting_is_named_at_the_decorator(tmp_path: Path, decorator: str, message: str) -> None:
    path = tmp_path / "settings.py"
    path.write_text(
        f'from conveyor import sdk\n\n\n{decorator}\ndef p() -> None:\n    sdk.step("a", image="busybox", command=["true"])\n'
    )
    with pytest.raises(InvalidSpec) as raised:
        load(str(path))
    text = str(raised.value)
    assert f"{path}:4: " in text and message in text, text


def test_step_outside_a_pipeline_is_refused_at_its_line() -> None:
    with pytest.raises(sdk.PipelineError) as raised:
        sdk.step("a", uses="ingest")
    (issue,) = raised.value.located
    assert issue.location.file == __file__ and "only possible inside a @pipeline function" in issue.message


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    path, _ = _write_mistake(
        tmp_path,
        [
            '    sdk.step("s", uses="split", with_={"lable": "y"})  #<',
            '    sdk.step("c", image="busybox", command=["echo", "{{ params.sed }}"])',
        ],
    )
    with pytest.raises(sdk.PipelineError) as raised:
        load(str(path))
    assert [(i.location.line, i.path) for i in raised.value.located] == [
        (7, "spec.steps[1].inputs"),
        (7, "spec.steps[1].with.lable"),
        (8, "spec.steps[2].container.command[1]"),
    ]


# ------------------------------------------------------------------ the command


def test_compile_writes_checks_and_exits_like_the_other_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(ROOT / "examples/diabetes/pipeline.py")
    out = tmp_path / "out" / "pipeline.yaml"
    assert main(["compile", f"{source}:diabetes", "-o", str(out)]) == 0
    assert out.read_text() == to_yaml(load(source))
    assert main(["validate", str(out)]) == 0
    assert main(["compile", source, "-o", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("0.3", "0.4"))
    assert main(["compile", source, "-o", str(out), "--check"]) == 1
    assert "differs from what the Python compiles to" in capsys.readouterr().err
    assert main(["compile", source]) == 0
    assert capsys.readouterr().out == to_yaml(load(source))


def test_compile_reads_a_module_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "team_pipelines").mkdir()
    (tmp_path / "team_pipelines" / "__init__.py").write_text("")
    (tmp_path / "team_pipelines" / "iris.py").write_text(
        "from conveyor import sdk\n\n\n@sdk.pipeline\ndef iris() -> None:\n"
        '    sdk.step("ingest", uses="ingest", with_={"source": "sklearn://iris"})\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["compile", "team_pipelines.iris:iris"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["metadata"] == {"name": "iris"}


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_here:p", "no module named 'no_such_module_here'"),
        ("no_such_package_here.sub:p", "no module named 'no_such_package_here.sub'"),
        ("json.no_such_sub:p", "no module named 'json.no_such_sub'"),
        ("{examples}/diabetes/pipeline.py:nope", "nope: not defined in the module (pipelines: diabetes)"),
        ("{examples}/diabetes/missing.py", "(file): no such file"),
        ("{examples}/diabetes/pipeline.py:sdk", "sdk: is a module, not a @pipeline function"),
    ],
)
def test_compile_exits_2_naming_what_it_cannot_find(
    reference: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compile", reference.format(examples=ROOT / "examples")]) == 2
    assert message in capsys.readouterr().err


def test_compile_exits_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, line = _write_mistake(tmp_path, ['    sdk.step("t", uses="trian")  #<'])
    assert main(["compile", str(path), "-o", str(tmp_path / "never.yaml")]) == 2
    assert f"error: {path}:{line}: spec.steps[1].uses: unknown component 'trian'" in capsys.readouterr().err
    assert not (tmp_path / "never.yaml").exists()


def test_canonical_keeps_every_parameter_type() -> None:
    pipeline = load(str(ROOT / "examples/breast-cancer/pipeline.py"))
    assert [p["type"] for p in canonical(pipeline)["spec"]["parameters"]] == [
        "number",
        "integer",
        "string",
        "string",
        "integer",
    ]


def _doc_pipelines() -> list[str]:
    text = (ROOT / "docs" / "sdk.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    return [b for b in blocks if "@sdk.pipeline\n" in b or "@sdk.pipeline(name" in b]


@pytest.mark.parametrize("block", _doc_pipelines())
def test_the_guides_pipelines_compile(tmp_path: Path, block: str) -> None:
    path = tmp_path / "from_the_guide.py"
    path.write_text(block if block.startswith("from conveyor import sdk") else "from conveyor import sdk\n\n" + block)
    assert load(str(path)).spec.steps


def test_the_guide_has_pipelines_to_check() -> None:
    assert len(_doc_pipelines()) >= 2
