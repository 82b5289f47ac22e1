"""onExit steps in the Python SDK: `with sdk.on_exit():` compiles to spec.onExit, mistakes are named by file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from conveyor import sdk
from conveyor.api.pipeline import Pipeline
from conveyor.cli.documents import load_documents
from conveyor.cli.main import main
from conveyor.core.validation import InvalidSpec
from conveyor.sdk.compiler import load, same, to_yaml

SOURCE = textwrap.dedent(
    '''\
    from conveyor import sdk


    @sdk.pipeline(name="with-cleanup")
    def with_cleanup(bucket: str = "s3://scratch") -> None:
        """Train, then always report and clean up."""
        data = sdk.step("ingest", uses="ingest", with_={"source": "sklearn://iris"})
        train = sdk.step(
            "train",
            image="python:3.11",
            command=["train", sdk.input_path("d"), sdk.output_path("model")],
            inputs={"d": data.outputs.dataset},
            outputs=["model"],
        )
        with sdk.on_exit():
            note = sdk.step(
                "notify",
                image="curl",
                command=["notify", sdk.run_phase, f"failed={sdk.run_failed_steps}", sdk.run_message, sdk.run_name],
                outputs=["receipt"],
            )
            sdk.step("archive", image="busybox", command=["cp", sdk.input_path("m"), bucket], inputs={"m": train.outputs.model})
            sdk.step("page", image="busybox", command=["page"], when=sdk.run_phase == "Failed", inputs={"r": note.outputs.receipt})
            sdk.step("tidy", image="busybox", command=["rm", "-r", bucket], retries=2).after(note)
    '''
)


@pytest.fixture
def compiled(tmp_path: Path) -> Pipeline:
    path = tmp_path / "cleanup.py"
    path.write_text(SOURCE)
    return load(f"{path}:with_cleanup")


def test_on_exit_steps_compile_to_spec_on_exit(compiled: Pipeline) -> None:
    spec = compiled.spec
    assert [s.name for s in spec.steps] == ["ingest", "train"]
    assert spec.on_exit is not None
    assert [s.name for s in spec.on_exit] == ["notify", "archive", "page", "tidy"]
    notify, archive, page, tidy = spec.on_exit
    assert notify.container is not None
    assert notify.container.command == [
        "notify",
        "{{ run.phase }}",
        "failed={{ run.failedSteps }}",
        "{{ run.message }}",
        "{{ run.name }}",
    ]
    assert [(i.name, i.step, i.output) for i in archive.inputs] == [("m", "train", "model")]
    assert archive.container is not None and archive.container.command[-1] == "{{ params.bucket }}"
    assert page.when == 'run.phase == "Failed"' and [i.step for i in page.inputs] == ["notify"]
    assert tidy.depends_on == ["notify"] and tidy.retries.limit == 2


def test_the_yaml_round_trips(compiled: Pipeline, tmp_path: Path) -> None:
    text = to_yaml(compiled)
    doc = yaml.safe_load(text)
    assert list(doc["spec"]) == ["description", "parameters", "steps", "onExit"]
    out = tmp_path / "pipeline.yaml"
    out.write_text(text)
    (read_back,) = load_documents(out)
    assert isinstance(read_back, Pipeline) and same(read_back, compiled)


def test_conveyor_compile_writes_and_checks_it(tmp_path: Path) -> None:
    source = tmp_path / "cleanup.py"
    source.write_text(SOURCE)
    out = tmp_path / "out.yaml"
    assert main(["compile", f"{source}:with_cleanup", "-o", str(out)]) == 0
    assert out.read_text() == to_yaml(load(str(source)))
    assert "onExit:" in out.read_text()
    assert main(["validate", str(out)]) == 0
    assert main(["compile", str(source), "-o", str(out), "--check"]) == 0


def test_a_pipeline_without_on_exit_compiles_without_the_field(tmp_path: Path) -> None:
    path = tmp_path / "plain.py"
    path.write_text(
        'from conveyor import sdk\n\n\n@sdk.pipeline\ndef plain() -> None:\n    sdk.step("a", image="b", command=["c"])\n'
    )
    assert "onExit" not in to_yaml(load(str(path)))


HEAD = """\
from conveyor import sdk


@sdk.pipeline
def p() -> None:
    work = sdk.step("work", image="busybox", command=["true"], outputs=["out"])
"""

MISTAKES: list[tuple[str, list[str], str]] = [
    (
        "a step reading an onExit step's output",
        [
            "    with sdk.on_exit():",
            '        note = sdk.step("note", image="busybox", command=["true"], outputs=["o"])',
            '    sdk.step("late", image="busybox", command=["true"], inputs={"x": note.outputs.o})  #<',
        ],
        "step 'note' is an onExit step: a step cannot read an output of one",
    ),
    (
        "a step after an onExit step",
        [
            "    with sdk.on_exit():",
            '        note = sdk.step("note", image="busybox", command=["true"])',
            '    sdk.step("late", image="busybox", command=["true"]).after(note)  #<',
        ],
        "step 'note' is an onExit step: a step cannot run after one",
    ),
    (
        "the outcome read by a step",
        ['    sdk.step("early", image="busybox", command=["echo", sdk.run_phase])  #<'],
        "{{ run.phase }} is only defined in an onExit step",
    ),
    (
        "a name used twice across steps and onExit",
        ["    with sdk.on_exit():", '        sdk.step("work", image="busybox", command=["true"])  #<'],
        "duplicate step name 'work'",
    ),
    (
        "on_exit blocks nested",
        ["    with sdk.on_exit():", "        with sdk.on_exit():  #<", "            pass"],
        "on_exit() blocks do not nest",
    ),
    (
        "an onExit step waiting for approval",
        ["    with sdk.on_exit():", '        sdk.step("ask", image="busybox", command=["true"], approval=True)  #<'],
        "spec.onExit[0].approval: an onExit step cannot wait for approval",
    ),
    (
        "an onExit condition on an unknown run field",
        [
            "    with sdk.on_exit():",
            '        sdk.step("n", image="busybox", command=["true"], when="run.state == 1")  #<',
        ],
        "spec.onExit[0].when: unknown run field 'state'",
    ),
]


@pytest.mark.parametrize(("lines", "message"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_named_by_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    body = HEAD + "\n".join(line.replace("  #<", "") for line in lines) + "\n"
    line = HEAD.count("\n") + next(i for i, text in enumerate(lines) if text.endswith("#<")) + 1
    path = tmp_path / "mistake.py"
    path.write_text(body)
    with pytest.raises(InvalidSpec) as raised:
        load(f"{path}:p")
    assert isinstance(raised.value, sdk.PipelineError), raised.value
    text = str(raised.value)
    assert f"{path}:{line}: " in text and message in text, text


def test_on_exit_outside_a_pipeline_is_refused() -> None:
    with pytest.raises(sdk.PipelineError) as raised, sdk.on_exit():
        pass
    assert "only possible inside a @pipeline function" in str(raised.value)


def test_run_fields_refuse_to_be_read_as_python_values() -> None:
    with pytest.raises(TypeError, match=r"run\.phase has no value while the pipeline is built"):
        bool(sdk.run_phase)
