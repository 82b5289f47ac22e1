"""The one Operator object built at start-up wires every reconciler to the same store, watch cache, Event
recorder and its own work queue (nothing started: building opens no connection)."""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest

from conveyor.controller import main
from conveyor.controller.config import OperatorConfig


def test_the_model_deployment_reconciler_shares_the_operators_store_cache_and_recorder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(main, "load_kube_config", kubernetes.client.ApiClient)
    opened: list[Any] = []
    monkeypatch.setattr(
        "conveyor.controller.modeldeployments.open_store", opened.append
    )  # a second client, were one opened
    op = main.Operator.build(OperatorConfig(s3_endpoint="http://127.0.0.1:9"), standalone=True)
    try:
        serving = op.serving
        assert serving._store is op.store
        assert serving._artifact_store() is op.store
        assert opened == []
        assert serving.watched is op.watched
        assert serving.post_event is op.events
        assert serving.requeue == op.serving_queue.after
        assert op.serving_queue is not op.run_queue and op.serving_queue is not op.pipeline_queue
    finally:
        op.events.stop()
