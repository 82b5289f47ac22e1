"""Issue #19: the values a step got from Secrets stay out of its failure message, result and stored log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.core.redact import REDACTED, SECRETS_ENV, redact_secrets, secret_sources, secret_values
from conveyor.core.task import TaskResult
from conveyor.runtime.step import own_secrets, redact_log, redacted_result

SOURCE_CASES: list[tuple[dict[str, Any], dict[str, list[str]]]] = [
    (
        {"env": [{"name": "DB_PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
                 {"name": "MODE", "value": "fast"}]},
        {"env": ["DB_PASS"], "prefixes": [], "plain": ["MODE"], "paths": []},
    ),
    (
        {"env_from": [{"secretRef": {"name": "s"}, "prefix": "S_"}, {"configMapRef": {"name": "c"}}]},
        {"env": [], "prefixes": ["S_"], "plain": [], "paths": []},
    ),
    (
        {"env_from": [{"secretRef": {"name": "s"}}]},
        {"env": [], "prefixes": [""], "plain": [], "paths": []},
    ),
    (
        {"mounts": [{"name": "keys", "mountPath": "/keys"}, {"name": "cfg", "mountPath": "/cfg"}],
         "volumes": [{"name": "keys", "secret": {"secretName": "k"}}, {"name": "cfg", "configMap": {"name": "c"}}]},
        {"env": [], "prefixes": [], "plain": [], "paths": ["/keys"]},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "expected"), SOURCE_CASES)
def test_secret_sources_name_what_comes_from_secrets(spec: dict[str, Any], expected: dict[str, list[str]]) -> None:
    got = secret_sources(spec.get("env", []), spec.get("env_from", []), spec.get("mounts", []), spec.get("volumes", []))
    assert got == expected


ENVIRON = {"DB_PASS": "hunter2hunter2", "MODE": "fast-mode", "S_KEY": "prefixed-value", "PATH": "/usr/bin:/bin",
           "SHORT": "1", "OTHER": "from-whole-secret"}  # fmt: skip
VALUE_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"env": ["DB_PASS"], "plain": ["MODE"]}, {"hunter2hunter2"}),
    ({"prefixes": ["S_"]}, {"prefixed-value"}),
    # a whole Secret without a prefix: every variable not set plainly and not ambient; "1" is too short to redact
    ({"prefixes": [""], "plain": ["MODE", "DB_PASS"]}, {"prefixed-value", "from-whole-secret"}),
    ({}, set()),
]


@pytest.mark.parametrize(("sources", "expected"), VALUE_CASES)
def test_secret_values_from_the_environment(sources: dict[str, Any], expected: set[str]) -> None:
    assert set(secret_values(sources, ENVIRON, {})) == expected


def test_redaction_keeps_the_other_lines() -> None:
    text = "epoch 3 loss 0.2\nconnecting with hunter2hunter2\napi_key=abcdef123456\nTraceback: boom"
    out = redact_secrets(text, ["hunter2hunter2"])
    assert "hunter2hunter2" not in out and "abcdef123456" not in out
    assert "epoch 3 loss 0.2" in out and "Traceback: boom" in out and out.count(REDACTED) == 2


def test_the_runtime_reads_its_env_and_mounted_secret_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    (keys / "..data").mkdir(parents=True)
    (keys / "..data" / "token").write_text("file-secret-value\n")
    (keys / "token").symlink_to(keys / "..data" / "token")
    sources = secret_sources(
        [{"name": "DB_PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
        [],
        [{"name": "keys", "mountPath": str(keys)}],
        [{"name": "keys", "secret": {"secretName": "k"}}],
    )
    environ = {SECRETS_ENV: json.dumps(sources), "DB_PASS": "hunter2hunter2", "MODE": "fast"}
    secrets = own_secrets(environ)
    assert set(secrets) == {"hunter2hunter2", "file-secret-value", "file-secret-value\n"}
    failed = TaskResult(
        ok=False, message="exit 1\n--- last log lines:\nusing hunter2hunter2 and file-secret-value\nbye"
    )
    message = redacted_result(failed, secrets).message
    assert message is not None
    assert "hunter2hunter2" not in message and "file-secret-value" not in message and "bye" in message
    assert "hunter2hunter2" not in redact_log("log hunter2hunter2 line", secrets)
    assert own_secrets({SECRETS_ENV: "not json", "DB_PASS": "hunter2hunter2"}) == []
