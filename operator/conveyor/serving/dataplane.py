"""The server's operations, independent of HTTP: health, metadata, inference, plain predict, feedback.

The data plane holds the one model this server serves, or why it cannot serve it ("loading",
a digest mismatch, an untrusted type). Every operation either returns a document or raises a
`ServingError` whose status the REST adapter answers with. Inference decodes on the event loop
(straight into numpy), queues the rows on the micro-batcher, and encodes the slice of the batch's
predictions that belongs to this request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from conveyor.components.modelio import OUTPUT_PREDICT, OUTPUT_PROBA
from conveyor.serving.batcher import MicroBatcher
from conveyor.serving.codec import (
    OutputTensor,
    Rows,
    encode_infer_response,
    json_values,
    loads_object,
    parse_infer_request,
    parse_instances,
    to_rows,
)
from conveyor.serving.errors import BadRequest, Conflict, ModelNotFound, NotReady
from conveyor.serving.metrics import ServerMetrics, training_categories
from conveyor.serving.model import Prediction, ServedModel, concat_rows
from conveyor.serving.monitoring import Label, MonitoringBuffer

log = logging.getLogger("conveyor.serving")

SERVER_NAME = "conveyor"
SERVER_VERSION = "0.1.0"
LOADING = "loading"
_MAX_LABELS = 10_000


@dataclass(frozen=True)
class Work:
    """One request's share of a batch."""

    rows: Rows
    proba: bool


class DataPlane:
    def __init__(
        self,
        name: str,
        version: str,
        digest: str,
        metrics: ServerMetrics,
        *,
        monitoring: MonitoringBuffer | None = None,
        max_batch_size: int = 64,
        max_queue: int = 1024,
        executor: Executor | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.digest = digest
        self.metrics = metrics
        self.monitoring = monitoring
        self.model: ServedModel | None = None
        self.failure: str | None = LOADING
        self.draining = False
        self.batcher: MicroBatcher[Work, Prediction] = MicroBatcher(
            self._run_batch,
            lambda work: work.rows.count,
            max_batch_size=max_batch_size,
            max_queue=max_queue,
            executor=executor,
        )

    # -- state ---------------------------------------------------------------------------------

    def model_loaded(self, model: ServedModel) -> None:
        categories = training_categories(model.metadata.profile)
        self.metrics.model_loaded(model.digest, model.signature, model.task, model.classes, categories)
        self.model = model
        self.failure = None

    def model_failed(self, reason: str) -> None:
        self.failure = reason

    def start_draining(self) -> None:
        self.draining = True

    @property
    def not_ready_reason(self) -> str | None:
        if self.draining:
            return "shutting down"
        return self.failure

    # -- health and metadata -------------------------------------------------------------------

    def live(self) -> dict[str, Any]:
        return {"live": True}

    def ready(self) -> dict[str, Any]:
        reason = self.not_ready_reason
        if reason is not None:
            raise NotReady(reason)
        return {"ready": True}

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]}

    def _served(self, name: str, version: str | None) -> ServedModel:
        if name != self.name:
            raise ModelNotFound(f"model {name!r} is not served here (this server serves {self.name!r})")
        if version is not None and version != self.version:
            raise ModelNotFound(f"model {name!r} has no version {version!r} here (serving {self.version!r})")
        if self.model is None:
            raise NotReady(self.failure or LOADING)
        return self.model

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        return self._served(name, version).metadata_document()

    def model_ready(self, name: str, version: str | None) -> dict[str, Any]:
        self._served(name, version)
        reason = self.not_ready_reason
        if reason is not None:
            raise NotReady(reason)
        return {"name": name, "ready": True}

    # -- inference -----------------------------------------------------------------------------

    def _run_batch(self, items: Sequence[Work]) -> list[Prediction | BaseException]:
        """On the worker thread: one model call for all items' rows, split back per item."""
        model = self.model
        if model is None:
            return [NotReady(self.failure or LOADING)] * len(items)
        rows = concat_rows([w.rows for w in items])
        try:
            result = model.predict(rows, any(w.proba for w in items))
        except (ValueError, TypeError, KeyError) as exc:
            if len(items) == 1:
                return [BadRequest(f"the model could not use this input: {exc}")]
            # One request's bad values must not fail its neighbours: serve each alone.
            return [self._run_batch([w])[0] for w in items]
        self.metrics.batch_size.observe(rows.count)
        if self.metrics.stats is not None:
            self.metrics.stats.observe(rows, result.predict)
        if len(items) == 1:
            return [result]
        out: list[Prediction | BaseException] = []
        start = 0
        for w in items:
            end = start + w.rows.count
            proba = result.proba[start:end] if (w.proba and result.proba is not None) else None
            out.append(Prediction(result.predict[start:end], proba))
            start = end
        return out

    async def infer(
        self, name: str, version: str | None, body: bytes, header_length: int | None
    ) -> tuple[bytes, int | None]:
        """POST /v2/models/{name}[/versions/{v}]/infer: the response body and its binary header length."""
        model = self._served(name, version)
        request = parse_infer_request(body, header_length)
        rows = to_rows(request.inputs, model.signature)
        requested = request.outputs
        names = [o.name for o in requested] or [OUTPUT_PREDICT]
        if OUTPUT_PROBA in names and not model.has_proba:
            raise BadRequest(f"output {OUTPUT_PROBA!r}: the model ({model.task}) has no class probabilities")
        result = await self.batcher.submit(Work(rows, OUTPUT_PROBA in names))
        binary = {o.name: o.binary for o in requested}
        outputs = []
        for output in names:
            array = result.predict if output == OUTPUT_PREDICT else result.proba
            assert array is not None
            outputs.append(OutputTensor(output, array, binary.get(output, request.binary_output)))
        if self.monitoring is not None:
            self.monitoring.add_predictions(request.id, result.predict)
        return encode_infer_response(model.name, model.version, request.id, outputs)

    async def predict(self, body: bytes) -> dict[str, Any]:
        """POST /predict: plain JSON instances in, predictions (and class probabilities) out."""
        model = self._served(self.name, None)
        request_id, rows = parse_instances(body, model.signature)
        result = await self.batcher.submit(Work(rows, model.has_proba))
        document: dict[str, Any] = {"predictions": json_values(result.predict)}
        if result.proba is not None:
            document["probabilities"] = np.ascontiguousarray(result.proba)
        document.update({"id": request_id, "model": model.name, "version": model.version})
        if self.monitoring is not None:
            self.monitoring.add_predictions(request_id, result.predict)
        return document

    # -- feedback ------------------------------------------------------------------------------

    def feedback(self, name: str, version: str | None, body: bytes) -> dict[str, Any]:
        """POST /v2/models/{name}/feedback: labels for earlier predictions, appended to the monitoring store."""
        self._served(name, version)
        doc = loads_object(body)
        if "labels" in doc:
            items = doc["labels"]
            if not isinstance(items, list) or not items:
                raise BadRequest("'labels' must be a non-empty list of {id, row, label} objects")
            if len(items) > _MAX_LABELS:
                raise BadRequest(f"at most {_MAX_LABELS} labels per request, got {len(items)}")
            labels = [_label(item, f"labels[{i}]") for i, item in enumerate(items)]
        else:
            labels = [_label(doc, "body")]
        if self.monitoring is None:
            raise Conflict("this server has no monitoring store (--monitoring-uri): labels cannot be recorded")
        self.monitoring.add_labels(labels)
        return {"accepted": len(labels)}


def _label(item: Any, where: str) -> Label:
    if not isinstance(item, dict):
        raise BadRequest(f"{where} must be an object with 'id', 'row' and 'label'")
    rid = item.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > 256:
        raise BadRequest(f"{where}: 'id' must be the request id, a non-empty string")
    row = item.get("row", 0)
    if not isinstance(row, int) or isinstance(row, bool) or row < 0:
        raise BadRequest(f"{where}: 'row' must be a non-negative integer")
    if "label" not in item:
        raise BadRequest(f"{where}: 'label' is missing")
    label = item["label"]
    if label is None or not isinstance(label, str | int | float | bool):
        raise BadRequest(f"{where}: 'label' must be a string, number or boolean")
    return Label(rid, row, label)
