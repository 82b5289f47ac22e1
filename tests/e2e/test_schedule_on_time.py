"""A schedule fires at its minute on the real API server, not at the next resync: the operator here resyncs only
every 300 s, so only the Pipeline pass's own wake time can create the Run on time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client as k8s_client
from test_operator import GROUP, VERSION, Operator, create
from test_schedules import get_pipeline, ready, runs_of, scheduled_pipeline, when

from testenv.controlplane import ControlPlane
from testenv.minio import S3Endpoint
from testenv.processes import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def slow_resync_operator(
    control_plane: ControlPlane, minio: S3Endpoint, install_crds: list[str], namespace: str
) -> Iterator[Operator]:
    """An operator of this namespace alone whose resync (and so its Pipeline timer) is far longer than a minute."""
    op = Operator(
        control_plane,
        minio,
        control_plane.log_dir,
        name="operator-slow-resync",
        args=("--standalone", "--namespace", namespace),
        extra_env={"CONVEYOR_RESYNC_SECONDS": "300"},
    ).start()
    yield op
    op.stop()


def test_a_schedule_fires_within_two_seconds_of_its_minute(
    api: k8s_client.ApiClient, namespace: str, slow_resync_operator: Operator
) -> None:
    ns, op = namespace, slow_resync_operator
    # The operator is up once it has judged a Pipeline.
    create(api, ns, "pipelines", {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Pipeline", "metadata": {"name": "probe"},
                                  "spec": {"steps": [{"name": "a", "container": {"image": "i", "command": ["true"]}}]}})
    wait_until(lambda: ready(get_pipeline(api, ns, "probe")), timeout=60, what="the operator's first pass")
    if datetime.now(UTC).second > 50:  # keep the minute under test well after the Pipeline's first pass
        time.sleep(62 - datetime.now(UTC).second)

    create(api, ns, "pipelines", scheduled_pipeline("on-time", "print('tick')"))
    first: Any = wait_until(lambda: runs_of(api, ns, "on-time"), timeout=75, what="the first scheduled Run")
    run = first[0]
    scheduled_at = int(run["metadata"]["labels"]["conveyor.dev/scheduled-at"])
    created = when(run["metadata"]["creationTimestamp"]).timestamp()  # whole seconds, rounded down
    # Created less than 2 s after its minute; the 300 s resync would have created it up to 5 minutes late.
    assert 0 <= created - scheduled_at <= 1, (scheduled_at, run["metadata"]["creationTimestamp"], op.log()[-3000:])
    name = run["metadata"]["name"]
    wait_until(lambda: get_pipeline(api, ns, "on-time").get("status", {}).get("lastRun") == name, timeout=10,
               what="the Pipeline's status to name the Run")

