"""Function steps: a Python function compiled to a container step that carries its source, checked against
the step image when the pipeline is compiled, and run by the function runtime (in process here)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conveyor.api.pipeline import Pipeline, Step
from conveyor.core.cachekey import cache_key
from conveyor.core.planner import RunContext, RunPlanner
from conveyor.core.task import StoreConfig
from conveyor.sdk import PipelineError
from conveyor.sdk.compiler import load, to_yaml
from conveyor.sdk.function_runtime import main as run_function
from conveyor.sdk.functions import default_step_image, step_image_modules

PIPELINE = '''\
from conveyor import sdk


@sdk.function_step(retries=2)
def summarise(dataset: sdk.InputPath, summary: sdk.OutputPath, label: str, scale: float = 1.0) -> dict[str, float]:
    """Rows and classes of a dataset."""
    import json

    import pandas as pd

    frame = pd.read_parquet(dataset)
    summary.write_text(json.dumps({"rows": len(frame)}))
    return {"rows": len(frame) * scale, "classes": float(frame[label].nunique())}


@sdk.pipeline
def demo(scale: float = 2.0) -> None:
    data = sdk.step("ingest", uses="ingest", with_={"source": "sklearn://iris"})
    counted = summarise(data.outputs.dataset, label="target", scale=scale)
    again = summarise.with_options(name="summarise-again", cache=False)(dataset=data.outputs.dataset, label="x")
    sdk.step("report", image="busybox", command=["true"], when=counted.metrics.rows > 100, depends_on=[again])
'''


def compile_source(tmp_path: Path, source: str, name: str = "demo") -> Pipeline:
    path = tmp_path / "pipeline_fn.py"
    path.write_text(source)
    return load(f"{path}:{name}")


def test_a_function_step_is_a_container_step_carrying_its_source(tmp_path: Path) -> None:
    pipeline = compile_source(tmp_path, PIPELINE)
    _, counted, again, report = pipeline.spec.steps
    assert counted.name == "summarise" and counted.container is not None
    assert counted.container.image == default_step_image()
    assert counted.container.command == ["python", "-m", "conveyor.sdk.function_runtime", "summarise"]
    assert counted.container.args == [
        "input:dataset={{ inputs.dataset }}",
        "output:summary={{ outputs.summary }}",
        "str:label=target",
        "float:scale={{ params.scale }}",
    ]
    (env,) = counted.container.env
    assert env.name == "CONVEYOR_FUNCTION_SOURCE"
    assert env.value.startswith("def summarise(") and "@sdk" not in env.value  # decorators stay behind
    assert [(i.name, i.step, i.output) for i in counted.inputs] == [("dataset", "ingest", "dataset")]
    assert [o.name for o in counted.outputs] == ["summary"]
    assert counted.retries.limit == 2
    assert again.name == "summarise-again" and again.cache.enabled is False and again.retries.limit == 2
    assert again.container is not None and "float:scale" not in " ".join(again.container.args)  # its default
    assert report.when == "steps.summarise.metrics.rows > 100" and report.depends_on == ["summarise-again", "summarise"]
    assert "value: |\n" in to_yaml(pipeline)  # the source reads as code in the YAML


def test_the_cache_key_covers_the_function_source(tmp_path: Path) -> None:
    def key(source: str) -> str:
        pipeline = compile_source(tmp_path, source)
        planner = RunPlanner(
            pipeline.spec, {"scale": 2.0}, RunContext("r", "r", "ns", "1", StoreConfig(kind="local", root="/s"))
        )
        step: Step = pipeline.spec.steps[1]
        return cache_key(template=planner._template(step), input_digests={"dataset": "sha256:1"}, code_version="1")

    assert key(PIPELINE) == key(PIPELINE)
    assert key(PIPELINE) != key(PIPELINE.replace("len(frame) * scale", "len(frame) * scale * 1"))


def test_the_runtime_calls_the_function_and_reports_its_metrics(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        def fit(data: InputPath, model: OutputPath, rounds: int, rate: float, tags: list, on: bool, note: str,
                anything=None) -> dict[str, float]:
            model.write_text(data.read_text().upper() + f" {rounds} {rate} {tags} {on} {note} {anything}")
            return {"rounds": rounds, "rate": rate}
        """
    )
    (tmp_path / "in.txt").write_text("abc")
    metrics = tmp_path / "metrics.json"
    argv = [
        "fit",
        f"input:data={tmp_path / 'in.txt'}",
        f"output:model={tmp_path / 'model'}",
        "int:rounds=3",
        "float:rate=1",
        'list:tags=["a", 2]',
        "bool:on=true",
        "str:note=a b=c",
        'json:anything={"k": 1}',
    ]
    assert run_function(argv, {"CONVEYOR_FUNCTION_SOURCE": source, "CONVEYOR_METRICS_FILE": str(metrics)}) == 0
    assert (tmp_path / "model").read_text() == "ABC 3 1.0 ['a', 2] True a b=c {'k': 1}"
    assert json.loads(metrics.read_text()) == {"rounds": 3.0, "rate": 1.0}


@pytest.mark.parametrize(
    ("argument", "code"),
    [("int:n=two", 2), ("int:n=1.5", 2), ("bool:n=1", 2), ("kind:n=1", 2)],
)
def test_the_runtime_refuses_an_argument_of_the_wrong_type(argument: str, code: int, tmp_path: Path) -> None:
    env = {"CONVEYOR_FUNCTION_SOURCE": "def f(n):\n    return None\n"}
    assert run_function(["f", argument], env) == code


def test_the_runtime_refuses_a_result_that_is_not_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_function(["f"], {"CONVEYOR_FUNCTION_SOURCE": "def f():\n    return 'done'\n"}) == 1
    assert "return a dict of metrics (numbers) or None" in capsys.readouterr().err


def test_source_the_templates_would_read_travels_encoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = PIPELINE.replace('"rows": len(frame)}', '"rows": len(frame), "fmt": "{{ x }}"}')
    pipeline = compile_source(tmp_path, source)
    container = pipeline.spec.steps[1].container
    assert container is not None
    (env,) = container.env
    assert env.name == "CONVEYOR_FUNCTION_SOURCE_B64"
    from conveyor.sdk.function_runtime import source_from

    assert '"fmt": "{{ x }}"' in source_from({env.name: env.value})


def test_the_step_image_has_the_ml_stack_and_the_standard_library() -> None:
    modules = step_image_modules()
    assert modules is not None
    assert {"sklearn", "pandas", "numpy", "pyarrow", "skops", "json", "pathlib", "conveyor", "pydantic"} <= modules
    assert "xgboost" not in modules and "kopf" not in modules  # kopf: the operator's image, not the step's


FUNCTION_MISTAKES: list[tuple[str, str, str]] = [
    (
        "import the image lacks",
        "@sdk.function_step\ndef f(x: int) -> None:\n    import xgboost  #<\n",
        "function step 'f' imports 'xgboost', which the step image does not have",
    ),
    (
        "from-import the image lacks",
        "@sdk.function_step\ndef f(x: int) -> None:\n    from kopf import on  #<\n",
        "imports 'kopf', which the step image does not have",
    ),
    (
        "a module-level global",
        "LIMIT = 3\n\n\n@sdk.function_step\ndef f(x: int) -> None:\n    print(x + LIMIT)  #<\n",
        "function step 'f' reads 'LIMIT' from its module, which does not travel with it",
    ),
    (
        "a module imported outside the function",
        "import json\n\n\n@sdk.function_step\ndef f(x: int) -> None:\n    print(json.dumps(x))  #<\n",
        "reads 'json' from its module",
    ),
    (
        "a closure",
        "def outer():\n    n = 1\n\n    @sdk.function_step  #<\n    def f(x: int) -> None:\n        print(n)\n\n    return f\n\n\nouter()\n",
        "reads variables of the function around it (n)",
    ),
    (
        "an unknown step option",
        "@sdk.function_step(retry=2)  #<\ndef f(x: int) -> None:\n    pass\n",
        "unknown step option(s) retry",
    ),
]


@pytest.mark.parametrize(
    ("source", "message"), [m[1:] for m in FUNCTION_MISTAKES], ids=[m[0] for m in FUNCTION_MISTAKES]
)
def test_what_the_image_lacks_is_an_error_at_its_line(tmp_path: Path, source: str, message: str) -> None:
    head = "from conveyor import sdk\n\n\n"
    text = (
        head + source + '\n\n@sdk.pipeline\ndef demo() -> None:\n    sdk.step("a", image="busybox", command=["true"])\n'
    )
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.endswith("#<"))
    with pytest.raises(PipelineError) as raised:
        compile_source(tmp_path, text.replace("  #<", ""))
    assert f"pipeline_fn.py:{line}: " in str(raised.value) and message in str(raised.value), str(raised.value)


def test_a_module_the_image_is_said_to_have_is_accepted(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        from conveyor import sdk

        @sdk.function_step(image="registry.local/team/boost:1", packages=["xgboost"])
        def boost(x: int) -> None:
            import xgboost
            print(xgboost.__version__, x)

        @sdk.pipeline
        def demo() -> None:
            boost(3)
        """
    )
    (boosted,) = compile_source(tmp_path, source).spec.steps
    assert boosted.container is not None and boosted.container.image == "registry.local/team/boost:1"
    assert boosted.container.args == ["int:x=3"]


CALL_MISTAKES: list[tuple[str, str, str]] = [
    ("artifact to a value", "summarise(data.outputs.dataset, label=data.outputs.dataset)", "is a value (str)"),
    ("unknown argument", 'summarise(data.outputs.dataset, label="y", lable="y")', "has no argument 'lable'"),
    ("output passed", 'summarise(data.outputs.dataset, label="y", summary="s3://x/y")', "'summary' is an output"),
    ("missing argument", "summarise(data.outputs.dataset)", "needs argument(s) label"),
    ("too many", 'summarise(data.outputs.dataset, "y", 2.0, 4)', "takes 3 arguments (its outputs are not passed)"),
    ("twice", 'summarise(data.outputs.dataset, "y", label="y")', "got argument 'label' twice"),
    ("not JSON", 'summarise(data.outputs.dataset, label="y", scale=object())', "object is not JSON"),
]


@pytest.mark.parametrize(("call", "message"), [m[1:] for m in CALL_MISTAKES], ids=[m[0] for m in CALL_MISTAKES])
def test_a_bad_call_of_a_function_step_is_named_at_its_line(tmp_path: Path, call: str, message: str) -> None:
    source = PIPELINE.replace(
        '    counted = summarise(data.outputs.dataset, label="target", scale=scale)\n', f"    counted = {call}\n"
    )
    line = next(i for i, s in enumerate(source.splitlines(), 1) if s == f"    counted = {call}")
    with pytest.raises(PipelineError) as raised:
        compile_source(tmp_path, source)
    assert f"pipeline_fn.py:{line}: " in str(raised.value) and message in str(raised.value), str(raised.value)
