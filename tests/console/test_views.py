"""The console's pure parts: redaction, the runs list's filters and pages, and the documents it serves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from console.harness import call
from conveyor.console.app import ConsoleApp
from conveyor.console.source import LocalSource, _live_record
from conveyor.console.views import BadQuery, RunRow, compare_view, parse_query, run_view, runs_page
from conveyor.core.redact import REDACTED, redact, redact_text

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        ("AWS_SECRET_ACCESS_KEY=abc123xyz next", "AWS_SECRET_ACCESS_KEY=", "abc123xyz"),
        ("s3://user:pa55word@minio:9000/bucket", "s3://user:", "pa55word"),
        ("https://h/x?a=1&X-Amz-Signature=deadbeef&b=2", "a=1", "deadbeef"),
        ('{"token": "t0ps3cret"}', '"token"', "t0ps3cret"),
        ("Authorization: Bearer abcdefghijkl", "Authorization", "abcdefghijkl"),
        ("key id AKIAABCDEFGHIJKLMNOP used", "key id", "AKIAABCDEFGHIJKLMNOP"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "", "MIIE"),
        ("db password: hunter2", "db password:", "hunter2"),
    ],
)
def test_redact_text_removes_credentials_and_keeps_context(text: str, kept: str, gone: str) -> None:
    out = redact_text(text)
    assert gone not in out and kept in out and REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "rows=100",
        "sha256:0123abcd cacheKey",
        "author=ada",
        "<b>bold</b>",
        "tokens_per_second 12.5",
        "file:///data/x.csv",
    ],
)
def test_redact_text_leaves_ordinary_text_alone(text: str) -> None:
    assert redact_text(text) == text


def test_redact_names_strings_but_not_numbers() -> None:
    doc = {"api_token": "s3", "rate": 0.5, "tokens": 12, "nested": [{"password": "x", "uri": "https://a:b@c/d"}]}
    assert redact(doc) == {
        "api_token": REDACTED,
        "rate": 0.5,
        "tokens": 12,  # a number under a secret-looking name is a metric, not a credential
        "nested": [{"password": REDACTED, "uri": f"https://a:{REDACTED}@c/d"}],
    }


def rows() -> list[RunRow]:
    return [
        RunRow("a-1", "a", "Succeeded", T0, 1.0, "2/2"),
        RunRow("b-1", "b", "Failed", T0 + timedelta(minutes=1), 2.0, "1/2"),
        RunRow("a-2", "a", "Running", T0 + timedelta(minutes=2), None, "0/2"),
        RunRow("old", "a", "(corrupt record)", None, None, ""),
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["a-2", "b-1", "a-1", "old"]),
        ({"pipeline": ["a"]}, ["a-2", "a-1", "old"]),
        ({"phase": ["Failed"]}, ["b-1"]),
        ({"since": [(T0 + timedelta(seconds=30)).isoformat()]}, ["a-2", "b-1"]),
        ({"until": [(T0 + timedelta(seconds=90)).isoformat()]}, ["b-1", "a-1"]),
        ({"per": ["2"], "page": ["2"]}, ["a-1", "old"]),
        ({"per": ["2"], "page": ["9"]}, []),
    ],
)
def test_runs_page_filters_sorts_newest_first_and_pages(query: dict[str, list[str]], expected: list[str]) -> None:
    doc = runs_page(rows(), parse_query(query))
    assert [r["id"] for r in doc["runs"]] == expected
    assert doc["pipelines"] == ["a", "b"]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({"phase": ["Done"]}, "phase"),
        ({"since": ["yesterday"]}, "since"),
        ({"per": ["0"]}, "per"),
        ({"page": ["x"]}, "page"),
    ],
)
def test_bad_queries_name_the_parameter(query: dict[str, list[str]], names: str) -> None:
    with pytest.raises(BadQuery, match=f"^{names}:"):
        parse_query(query)


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "RunRecord",
        "runId": "r-1",
        "pipeline": "p",
        "phase": "Failed",
        "reason": "StepFailed",
        "message": "step 'b' failed",
        "parameters": {"lr": 0.1, "db_password": "hunter2"},
        "environment": {"python": "3.11", "nested": {"x": 1}},
        "steps": [
            {
                "name": "a",
                "phase": "Succeeded",
                "outputs": [{"name": "o", "digest": "sha256:" + "1" * 64, "size": 3}],
                "logs": ["runs/r-1/logs/a-1.log"],
                "log": "/home/someone/.conveyor/runs/r-1/logs/a.log",
            },
            {
                "name": "b",
                "phase": "Failed",
                "message": "exit 1; TOKEN=abc123",
                "inputs": [{"name": "i", "step": "a", "output": "o", "digest": "sha256:" + "1" * 64}],
                "logs": [],
            },
        ],
    }
    return {**base, **overrides}


def test_run_view_is_redacted_and_carries_only_known_fields() -> None:
    view = run_view(record(), {})
    text = json.dumps(view)
    assert "hunter2" not in text and "abc123" not in text
    assert "/home/someone" not in text  # the live log's machine path is not a field the console sends
    assert view["environment"] == {"python": "3.11"}
    assert view["failure"] == {
        "reason": "StepFailed",
        "message": "step 'b' failed",
        "steps": [{"step": "b", "message": f"exit 1; TOKEN={REDACTED}"}],
    }
    assert view["steps"][0]["logs"] == [{"key": "a", "attempt": 1}]
    assert 'data-id="b" data-state="Failed"' in view["dag"] and 'data-from="a" data-to="b"' in view["dag"]


def test_compare_view_marks_differences_and_redacts() -> None:
    one, two = record(), record(runId="r-2", parameters={"lr": 0.2, "db_password": "other"})
    view = compare_view([one, two])
    by_name = {r["name"]: r for r in view["rows"]}
    assert by_name["lr"]["differs"] and by_name["lr"]["values"] == ["0.1", "0.2"]
    assert by_name["db_password"]["values"] == [REDACTED, REDACTED] and not by_name["db_password"]["differs"]
    assert view["differing"] == 1


def test_live_record_reads_attempts_but_never_the_environment(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "p-20261201-120000-abcdef"
    for key, attempt, result in [
        ("a", 1, {"ok": True, "metrics": {"m": 1.0}}),
        ("f[0]", 1, None),
        ("f[1]", 1, {"ok": False}),
    ]:
        d = run / "steps" / f"{key}-{attempt}"
        d.mkdir(parents=True)
        (d / "task.json").write_text(json.dumps({"step": key, "env": {"PASSWORD": "hunter2"}}))
        if result is not None:
            (d / "result.json").write_text(json.dumps(result))
    live = _live_record(run.name, run, T0)
    assert live["pipeline"] == "p" and live["phase"] == "Running"
    steps = {s["name"]: s for s in live["steps"]}
    assert steps["a"]["phase"] == "Succeeded" and steps["a"]["metrics"] == {"m": 1.0}
    assert steps["f"]["fanOut"] == {"total": 2, "succeeded": 0, "failed": 1, "running": 1, "skipped": 0}
    assert "hunter2" not in json.dumps(run_view(live, {}, live=True))


def test_app_answers_304_for_an_unchanged_document_and_refuses_writes(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    app = ConsoleApp(LocalSource(tmp_path))
    status, headers, body = call(app, "GET", "/api/runs")
    assert status == 200 and json.loads(body)["total"] == 0
    again, _, empty = call(app, "GET", "/api/runs", [(b"if-none-match", headers[b"etag"])])
    assert again == 304 and empty == b""
    assert call(app, "DELETE", "/api/runs/x")[0] == 405
    assert call(app, "GET", "/api/runs?phase=Nope")[0] == 400
    assert call(app, "GET", "/static/..%2Fapp.py")[0] == 404
    assert call(app, "GET", "/static/console.js")[1][b"content-type"].startswith(b"text/javascript")


@pytest.mark.parametrize(
    ("host", "status"),
    [(b"127.0.0.1:8420", 200), (b"localhost:8420", 200), (b"[::1]:8420", 200), (b"evil.example:8420", 421), (b"", 421)],
)
def test_a_loopback_console_answers_only_to_loopback_names(tmp_path: Path, host: bytes, status: int) -> None:
    """A page elsewhere that re-points its own name at 127.0.0.1 (DNS rebinding) must not read the runs."""
    from conveyor.console.server import LOOPBACK_NAMES

    (tmp_path / "runs").mkdir()
    app = ConsoleApp(LocalSource(tmp_path), LOOPBACK_NAMES)
    assert call(app, "GET", "/api/runs", [(b"host", host)] if host else [])[0] == status


def test_ui_refuses_a_missing_state_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conveyor.cli.main import main

    assert main(["ui", "--state-dir", str(tmp_path / "nope")]) == 1
    assert "is not a directory" in capsys.readouterr().err


def test_a_record_being_written_is_a_running_run_and_an_old_broken_one_is_corrupt(tmp_path: Path) -> None:
    import os

    run = tmp_path / "runs" / "p-20261201-120000-abcdef"
    run.mkdir(parents=True)
    (run / "record.json").write_text('{"kind": "RunRec')  # the runner is in the middle of writing it
    source = LocalSource(tmp_path)
    assert [r.phase for r in source.rows()] == ["Running"]
    assert source.run(run.name)["live"] and source.run(run.name)["problem"] is None
    os.utime(run / "record.json", (1.0e9, 1.0e9))  # written long ago and still broken
    assert [r.phase for r in source.rows()] == ["(corrupt record)"]
    view = source.run(run.name)
    assert "corrupt" in view["problem"] and view["live"]
