"""The model server's command line: what it accepts, creates and refuses before serving."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.serving.server import parse_config

ARGS = ["--model-name", "clf", "--model-uri", "file:///m.zip", "--model-digest", "sha256:" + "a" * 64]


def test_a_missing_work_dir_is_created(tmp_path: Path) -> None:
    work = tmp_path / "not" / "there"
    config = parse_config([*ARGS, "--work-dir", str(work)])
    assert config.work_dir == work and work.is_dir()


def test_a_work_dir_that_cannot_be_created_is_refused_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as raised:
        parse_config([*ARGS, "--work-dir", str(tmp_path / "file" / "work")])
    assert raised.value.code == 2
    assert f"--work-dir: cannot create {tmp_path / 'file' / 'work'}: Not a directory" in capsys.readouterr().err
