"""The operator's side of issue #19: a failed step's message reaches the Run status only through `redact_text`.

The runtime redacts its own report; this is the defence in depth for a report that did not (an older step image,
a container that crashed before the runtime wrote one and left raw output in its termination message).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.controller.runs import RunReconciler
from conveyor.core.redact import REDACTED
from conveyor.core.task import TaskResult
from conveyor.kube.cluster import JobObservation
from conveyor.storage.local import LocalStore


@dataclass
class _Holder:
    """Just what `_result_of` reads from the reconciler: its store (a real one on disk)."""

    store: LocalStore


def _obs(message: str | None) -> JobObservation:
    return JobObservation(
        step="train", attempt=1, name="run-train-1", finished=True, succeeded=False,
        termination_message=message, reason="BackoffLimitExceeded",
    )  # fmt: skip


REPORT = TaskResult(
    ok=False, message="step failed\n--- last log lines:\nAuthorization: Bearer abcdefghijklmnop\nepoch 3"
)

CASES = [
    # (termination message, secret that must be gone, text that must stay)
    ("Traceback: db password=hunter2hunter2 rejected", "hunter2hunter2", "rejected"),
    ("connecting to postgres://app:s3cr3tpw@db:5432/x failed", "s3cr3tpw", "postgres://app:"),
    ("AKIAABCDEFGHIJKLMNOP was denied", "AKIAABCDEFGHIJKLMNOP", "was denied"),
    (REPORT.model_dump_json(), "abcdefghijklmnop", "epoch 3"),
]


@pytest.mark.parametrize(("termination", "secret", "kept"), CASES)
def test_a_failed_steps_message_keeps_no_credential(tmp_path: Path, termination: str, secret: str, kept: str) -> None:
    result = RunReconciler._result_of(_Holder(LocalStore(tmp_path)), "run", "train", 1, _obs(termination))  # type: ignore[arg-type]
    assert not result.ok
    assert result.message is not None
    assert secret not in result.message
    assert REDACTED in result.message
    assert kept in result.message


def test_a_plain_failure_message_is_unchanged(tmp_path: Path) -> None:
    result = RunReconciler._result_of(_Holder(LocalStore(tmp_path)), "run", "train", 1, _obs("exit 3: no such file"))  # type: ignore[arg-type]
    assert result.message == "Job run-train-1 failed (BackoffLimitExceeded): exit 3: no such file"
