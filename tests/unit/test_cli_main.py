"""The `conveyor` command's own checks, in process: what it refuses before anything runs, and how it says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conveyor.cli.main import main

VALID = {
    "apiVersion": "conveyor.dev/v1alpha1",
    "kind": "Pipeline",
    "metadata": {"name": "ok"},
    "spec": {
        "parameters": [
            {"name": "trees", "type": "integer", "default": 3},
            {"name": "rate", "type": "number", "default": 0.5},
            {"name": "flag", "type": "boolean", "default": True},
            {"name": "xs", "type": "list", "default": [1]},
        ],
        "steps": [{"name": "a", "uses": "ingest", "with": {"source": "sklearn://iris"}}],
    },
}


def write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_validate_checks_every_file_and_reports_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.yaml", {**VALID, "kind": "Pipe"})
    b = write(tmp_path, "b.yaml", VALID)
    c = write(tmp_path, "c.yaml", {**VALID, "apiVersion": "v9"})
    assert main(["validate", str(a), str(b), str(c)]) == 2
    out, err = capsys.readouterr()
    assert f"{b}: Pipeline ok is valid" in out
    assert f"{a}: kind: unknown kind 'Pipe'" in err and f"{c}: apiVersion: unsupported apiVersion 'v9'" in err
    assert "2 of 3 files are invalid" in err


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_parallelism_must_be_at_least_one(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["run", str(write(tmp_path, "p.yaml", VALID)), "--parallelism", value])
    assert raised.value.code == 2
    assert "--parallelism" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("trees=abc", "parameters.trees: parameter 'trees' is an integer: cannot read 'abc' as one"),
        ("rate=fast", "parameters.rate: parameter 'rate' is a number: cannot read 'fast' as one"),
        ("flag=yes", "parameters.flag: parameter 'flag' is a boolean (true or false): cannot read 'yes' as one"),
        ("xs=[1,", "parameters.xs: parameter 'xs' is a list (a JSON list such as [1, 2]): cannot read '[1,' as one"),
        ("xs=3", "parameters.xs: parameter 'xs' is a list (a JSON list such as [1, 2]): cannot read '3' as one"),
    ],
)
def test_parameter_values_that_do_not_parse_name_parameter_type_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: str, message: str
) -> None:
    path = write(tmp_path, "p.yaml", VALID)
    assert main(["run", str(path), "-p", pair, "--state-dir", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == f"error: {path}: {message}\n"
