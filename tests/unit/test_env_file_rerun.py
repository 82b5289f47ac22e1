"""`--env-file` beyond `conveyor run`: `conveyor rerun --local` and the SDK's `run_local(env_file=...)` read it with
the same reader (conveyor.local.env_file), and a rerun of a cluster Run refuses it. The steps really run here (a
Python one-liner as the container's command); what they saw is their output's digest."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml

from conveyor import sdk
from conveyor.cli.main import main
from conveyor.core.validation import InvalidSpec
from conveyor.local import env_file as env_file_module

# Writes the variable's digest to its output: the record holds the output's digest, never the value.
CODE = (
    "import hashlib,os,sys; open(sys.argv[1],'w').write(hashlib.sha256(os.environ['DB_PASSWORD'].encode()).hexdigest())"
)
SECRET_ENV = {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}


def pipeline_file(tmp_path: Path) -> Path:
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "reads-secret"},
        "spec": {
            "steps": [
                {
                    "name": "read",
                    "container": {"image": "local", "command": [sys.executable, "-c", CODE, "{{ outputs.seen }}"]},
                    "outputs": [{"name": "seen"}],
                    "pod": {"env": [SECRET_ENV]},
                }
            ]
        },
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def env(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(f"# test credentials\nexport DB_PASSWORD='{value}'\n")
    return path


def runs(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "runs").iterdir()) if (state / "runs").is_dir() else []


def seen_digest(state: Path, run: str) -> str:
    """The recorded digest of the step's output (the digest of the file holding the value's digest)."""
    (step,) = json.loads((state / "runs" / run / "record.json").read_text())["steps"]
    (out,) = step["outputs"]
    return str(out["digest"])


@pytest.fixture
def first_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    state = tmp_path / "state"
    code = main(
        ["run", str(pipeline_file(tmp_path)), "--state-dir", str(state), "--no-progress",
         "--env-file", str(env(tmp_path, "a.env", "first-value"))]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    (run,) = runs(state)
    capsys.readouterr()
    return state, run


def test_a_local_rerun_without_the_env_file_is_refused_before_anything_runs(
    first_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, run = first_run
    assert main(["rerun", run, "--local", "--state-dir", str(state), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "spec.steps[0].pod.env[0].valueFrom" in err and "needs --env-file FILE" in err
    assert runs(state) == [run]  # nothing ran


def test_a_local_rerun_with_the_env_file_reproduces_and_the_steps_get_its_values(
    tmp_path: Path, first_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, run = first_run
    same = env(tmp_path, "same.env", "first-value")
    assert main(["rerun", run, "--local", "--state-dir", str(state), "--no-progress", "--env-file", str(same)]) == 0
    out = capsys.readouterr().out
    assert "reproduced: all 1 output digests are identical" in out
    assert "first-value" not in out
    # another value reaches the step: its output differs, which --strict turns into a failure
    other = env(tmp_path, "other.env", "rotated-value")
    code = main(
        ["rerun", run, "--local", "--state-dir", str(state), "--no-progress", "--strict", "--env-file", str(other)]
    )
    out = capsys.readouterr().out
    assert code == 1 and "other outputs differ: read.seen" in out
    assert hashlib.sha256(b"rotated-value").hexdigest() not in out  # the proof shows digests of the files only
    assert len(runs(state)) == 3
    for r in runs(state):  # no record or task file holds a value
        for f in (state / "runs" / r).rglob("*"):
            if f.is_file():
                text = f.read_text(errors="replace")
                assert "first-value" not in text and "rotated-value" not in text, f


def test_a_local_rerun_names_the_env_file_line_that_is_wrong(
    tmp_path: Path, first_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, run = first_run
    bad = tmp_path / "bad.env"
    bad.write_text("DB_PASSWORD='never closed\n")
    assert main(["rerun", run, "--local", "--state-dir", str(state), "--no-progress", "--env-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1" in err and "never closed" not in err
    assert runs(state) == [run]


def test_a_rerun_on_a_cluster_refuses_an_env_file_without_reaching_the_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: object) -> None:
        raise AssertionError("the cluster was asked")

    monkeypatch.setattr("conveyor.cli.lifecycle_commands._source", unreachable)
    assert main(["rerun", "nightly-1", "-n", "ml", "--env-file", str(env(tmp_path, "a.env", "x"))]) == 2
    err = capsys.readouterr().err
    assert "--env-file" in err and "(--local)" in err and "namespace ml" in err


@sdk.pipeline(name="sdk-reads-secret")
def reads_secret() -> None:
    sdk.step(
        "read",
        image="local",
        command=[sys.executable, "-c", CODE, sdk.output_path("seen")],
        outputs=["seen"],
        pod={"env": [SECRET_ENV]},
    )


def test_run_local_takes_an_env_file_through_the_same_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[Path | None] = []
    real = env_file_module.read_env_file

    def spy(path: Path | None, spec: object) -> object:
        read.append(path)
        return real(path, spec)  # type: ignore[arg-type]

    monkeypatch.setattr(env_file_module, "read_env_file", spy)
    with pytest.raises(InvalidSpec, match="needs --env-file FILE"):
        reads_secret.run_local(state_dir=tmp_path / "state", progress=False)
    assert not (tmp_path / "state" / "runs").exists()
    path = env(tmp_path, "a.env", "from-python")
    outcome = reads_secret.run_local(state_dir=tmp_path / "state", progress=False, env_file=str(path))
    assert outcome.phase.value == "Succeeded"
    assert read == [None, path]
    (run,) = runs(tmp_path / "state")
    written = hashlib.sha256(b"from-python").hexdigest().encode()  # what the step wrote, from the file's value
    assert seen_digest(tmp_path / "state", run) == "sha256:" + hashlib.sha256(written).hexdigest()
