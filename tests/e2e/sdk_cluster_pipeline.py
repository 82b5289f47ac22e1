"""The pipeline tests/e2e/test_sdk_on_the_cluster.py compiles with `conveyor compile` and runs on the test cluster.

Written as a user writes one: function steps wired by their outputs, a step reading a Secret through valueFrom
and a ConfigMap through a volume, and an onExit function step that reports the Run's outcome. Not a test module
(pytest does not collect it); importable only by the compiler and the test.

The test cluster's node agent runs step pods as processes on this machine, so the step image's `python` is the
Python that compiles this module: the pipeline's pod env puts its directory first on PATH (as `run_local` does).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conveyor import sdk

SECRET_NAME, SECRET_KEY = "e2e-db", "password"
SETTINGS_CONFIG_MAP = "e2e-settings"
SETTINGS_MOUNT = "/etc/e2e-settings"

STEP_PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])


@sdk.function_step
def make_rows(count: int, rows: sdk.OutputPath) -> dict[str, float]:
    """`count` numbered rows, one a line."""
    rows.write_text("".join(f"row-{i}\n" for i in range(count)))
    return {"rows": float(count)}


@sdk.function_step(
    pod={
        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}}}],
        "volumeMounts": [{"name": "settings", "mountPath": SETTINGS_MOUNT, "readOnly": True}],
    }
)
def check_rows(
    rows: sdk.InputPath, settings_dir: str, report: sdk.OutputPath, reject: bool = False
) -> dict[str, float]:
    """What the step saw: the rows it was given, the mounted ConfigMap's greeting and a digest of the Secret (the
    value itself never leaves the process)."""
    import hashlib
    import json
    import os
    from pathlib import Path

    lines = rows.read_text().splitlines()
    password = os.environ.get("DB_PASSWORD", "")
    report.write_text(
        json.dumps(
            {
                "lines": lines,
                "greeting": (Path(settings_dir) / "greeting").read_text(),
                "passwordSha256": hashlib.sha256(password.encode()).hexdigest(),
            }
        )
    )
    if reject:
        import logging

        # a careless step: the Secret's value in its output, its log and its failure (issue #19)
        print(f"connecting with {password}", flush=True)
        logging.getLogger("check-rows").warning("login as app with %s failed", password)
        logging.getLogger("check-rows").warning("looked at %d rows", len(lines))
        raise SystemExit(f"check-rows: rows rejected on purpose (password {password})")
    return {"lines": float(len(lines))}


@sdk.function_step
def notify(phase: str, failed: str, message: str, seen: sdk.OutputPath) -> None:
    """The Run's outcome as the onExit step's own process received it."""
    import json

    seen.write_text(json.dumps({"phase": phase, "failedSteps": failed, "message": message}))


@sdk.pipeline(
    name="sdk-e2e",
    pod={
        "env": [{"name": "PATH", "value": STEP_PATH}],
        "volumes": [{"name": "settings", "configMap": {"name": SETTINGS_CONFIG_MAP}}],
    },
)
def sdk_e2e(count: int = 5, reject: bool = False) -> None:
    """Rows made by one function step, checked by another that reads a Secret and a mounted ConfigMap."""
    made = make_rows(count)
    check_rows(made.outputs.rows, settings_dir=SETTINGS_MOUNT, reject=reject)
    with sdk.on_exit():
        notify(sdk.run_phase, sdk.run_failed_steps, sdk.run_message)
