"""--env-file for the local runner: dotenv parsing, and pod.env valueFrom variables filled by the variable's name."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.api.pipeline import PipelineSpec
from conveyor.core.envfile import local_step_env, parse_env_file
from conveyor.core.support import LOCAL, unsupported


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\n# comment\n\nB = two words  # trailing\n", {"A": "1", "B": "two words"}),
        ("export TOKEN=abc\n", {"TOKEN": "abc"}),
        ("P='it''s'\n", None),  # text after the closing quote
        ("P='$x # not a comment'\n", {"P": "$x # not a comment"}),
        ('P="a\\nb\\"c\\$"\n', {"P": 'a\nb"c$'}),
        ('KEY="line one\nline two"\nNEXT=1\n', {"KEY": "line one\nline two", "NEXT": "1"}),
        ("A=1\nA=2\n", {"A": "2"}),
        ("A=${B}\n", {"A": "${B}"}),  # no expansion
    ],
)
def test_dotenv_lines(text: str, expected: dict[str, str] | None) -> None:
    values, issues = parse_env_file(text, ".env")
    if expected is None:
        assert issues and values == {}
    else:
        assert (values, issues) == (expected, [])


@pytest.mark.parametrize("text", ["no-equals-sign\n", "1BAD=x\n", 'OPEN="never closed\n'])
def test_a_bad_line_is_named_by_file_and_line_without_its_value(text: str) -> None:
    values, issues = parse_env_file("OK=fine\n" + text, "creds.env")
    assert values == {"OK": "fine"}
    (issue,) = issues
    assert issue.path == "creds.env:2"
    assert "never closed" not in issue.message and "x" not in issue.message.replace("expected", "")


def spec(pod: dict[str, Any] | None = None, step_pod: dict[str, Any] | None = None) -> PipelineSpec:
    step: dict[str, Any] = {"name": "read", "container": {"image": "local", "command": ["true"]}}
    if step_pod is not None:
        step["pod"] = step_pod
    return PipelineSpec.model_validate({"pod": pod, "steps": [step]} if pod else {"steps": [step]})


SECRET = {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
OPTIONAL = {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode", "optional": True}}}


def test_value_from_is_filled_by_the_variable_name_and_literals_expand() -> None:
    s = spec(pod={"env": [SECRET, {"name": "URL", "value": "db://u:$(DB_PASSWORD)@h"}]}, step_pod={"env": [OPTIONAL]})
    envs, issues = local_step_env(s, {"DB_PASSWORD": "hunter2", "UNUSED": "x"})
    assert issues == []
    assert envs == {"read": {"DB_PASSWORD": "hunter2", "URL": "db://u:hunter2@h"}}  # MODE optional: left unset


def test_a_missing_value_is_an_issue_at_its_field_and_env_is_supported_locally() -> None:
    s = spec(step_pod={"env": [SECRET]})
    assert unsupported(s, LOCAL) == []
    _, without_file = local_step_env(s, None)
    _, without_key = local_step_env(s, {"OTHER": "1"})
    for issues in (without_file, without_key):
        (issue,) = issues
        assert issue.path == "spec.steps[0].pod.env[0].valueFrom"
        assert "DB_PASSWORD" in issue.message and "Secret 'db' key 'password'" in issue.message
    assert "needs --env-file" in without_file[0].message
    assert "is not in the --env-file" in without_key[0].message


def test_other_pod_settings_are_still_refused_locally() -> None:
    s = spec(pod={"envFrom": [{"secretRef": {"name": "db"}}]})
    (issue,) = unsupported(s, LOCAL)
    assert issue.path == "spec.pod.envFrom" and "not supported yet by the local runner" in issue.message
