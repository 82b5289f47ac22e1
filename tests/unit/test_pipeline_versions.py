"""Pipeline versions: the record's generation, and `conveyor pipeline versions` over records and Runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor.cli.main import main
from conveyor.cli.versions_command import VersionUse, versions, versions_text
from conveyor.core.record import record_document
from conveyor.storage.local import LocalStore

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def use(run: str, minutes: int, generation: int | None, digest: str, phase: str = "Succeeded") -> VersionUse:
    return VersionUse(run, phase, T0 + timedelta(minutes=minutes), generation, digest)


def test_runs_group_by_generation_and_digest_newest_first_with_the_current_one() -> None:
    rows = versions([use("r1", 0, 1, A), use("r2", 5, 2, B), use("r3", 9, 1, A, "Failed")], current=(3, A))
    assert [(r.generation, r.spec_digest, r.current, [u.run for u in r.runs]) for r in rows] == [
        (3, A, True, []),  # the same spec as generation 1 (an edit reverted), a version of its own
        (2, B, False, ["r2"]),
        (1, A, False, ["r1", "r3"]),
    ]
    text = versions_text(rows, T0 + timedelta(hours=1))
    lines = text.splitlines()
    assert lines[0].split() == ["GENERATION", "SPEC", "DIGEST", "RUN", "PHASE", "AGE"]
    assert lines[1].split() == ["3", "(current)", "sha256:aaaaaaaaaaaa", "(no", "runs)"]
    assert lines[3].split() == ["1", "sha256:aaaaaaaaaaaa", "r3", "Failed", "51m"]
    assert lines[4].split() == ["r1", "Succeeded", "60m"]  # the version's cells only on its first line


def test_without_generations_versions_are_ordered_by_their_latest_run() -> None:
    rows = versions([use("old", 0, None, A), use("new", 9, None, B), use("older", -5, None, A)])
    assert [r.spec_digest for r in rows] == [B, A]


def write_record(state: Path, run_id: str, digest: str, started: datetime) -> None:
    (state / "runs" / run_id).mkdir(parents=True)
    record = {
        "kind": "RunRecord",
        "runId": run_id,
        "pipeline": "iris",
        "phase": "Succeeded",
        "startedAt": started.isoformat(),
        "pipelineSpecDigest": digest,
        "pipelineGeneration": None,
        "steps": [],
    }
    LocalStore(state / "store").put_document(record_document(run_id), record)


def test_the_cli_lists_local_versions_and_their_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_record(tmp_path, "iris-1", A, T0)
    write_record(tmp_path, "iris-2", B, T0 + timedelta(minutes=1))
    write_record(tmp_path, "iris-3", A, T0 + timedelta(minutes=2))
    assert main(["pipeline", "versions", "iris", "--local", "--state-dir", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(v["specDigest"], [r["name"] for r in v["runs"]]) for v in out["versions"]] == [
        (A, ["iris-3", "iris-1"]),
        (B, ["iris-2"]),
    ]
    assert main(["pipeline", "versions", "nope", "--local", "--state-dir", str(tmp_path)]) == 1
    assert "no pipeline 'nope'" in capsys.readouterr().err
