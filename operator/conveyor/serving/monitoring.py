"""Sampled predictions and fed-back labels, written as JSON lines to a monitoring store off the request path.

Layout under the monitoring URI (`s3://bucket/prefix` or `file:///dir`):

- `predictions/<version>/<UTC yyyymmddTHHMMSS>-<uuid>.jsonl`, lines
  `{"id","row","time","version","digest","prediction"}`
- `feedback/<UTC yyyymmddTHHMMSS>-<uuid>.jsonl`, lines `{"id","row","time","label"}`

Requests are sampled by a hash of their id, so every row of a sampled request is kept and any
replica makes the same choice for the same id. The request path only appends to an in-memory
buffer (O(1), no I/O); a flusher thread writes an object every `flush_seconds` or as soon as
`flush_records` records wait, and once more on shutdown. A failed write drops that object's
records and counts them; a buffer over `max_records` drops new records the same way. Nothing here
ever fails or slows a request.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import numpy as np
import orjson

from conveyor.api.store import StoreConfig

log = logging.getLogger("conveyor.serving.monitoring")


class RecordSink(Protocol):
    def write(self, key: str, data: bytes) -> None:
        """Store `data` under `key` (relative, slash-separated); raise on failure."""
        ...


class DirectorySink:
    """Objects as files under a directory, each written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, key: str, data: bytes) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            Path(tmp).replace(dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class S3Sink:
    """Objects in s3://bucket/prefix/, through the artifact store protocol's raw writes."""

    def __init__(self, bucket: str, prefix: str, endpoint: str | None) -> None:
        from conveyor.storage.factory import open_store  # noqa: PLC0415  # boto3 only when monitoring goes to S3

        self.store = open_store(StoreConfig(kind="s3", bucket=bucket, prefix=prefix, endpoint=endpoint))

    def write(self, key: str, data: bytes) -> None:
        self.store.put_raw(key, data, "application/x-ndjson")


def open_sink(uri: str, s3_endpoint: str | None = None) -> RecordSink:
    parsed = urlparse(uri)
    if parsed.scheme == "s3" and parsed.netloc:
        return S3Sink(parsed.netloc, parsed.path.strip("/"), s3_endpoint)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and parsed.path:
        return DirectorySink(Path(unquote(parsed.path)))
    raise ValueError(f"monitoring URI must be s3://bucket/prefix or file:///dir, got {uri!r}")


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request is in the sample: a stable hash of its id, so all its rows go together."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    return zlib.crc32(request_id.encode()) < rate * 4294967296.0


def _stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%S")


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Label:
    id: str
    row: int
    label: Any


class MonitoringBuffer:
    """The buffer between request handlers and the store, with its flusher thread."""

    def __init__(
        self,
        sink: RecordSink,
        *,
        version: str,
        digest: str,
        sample_rate: float,
        on_dropped: Callable[[int], None],
        flush_seconds: float = 2.0,
        flush_records: int = 500,
        max_records: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink
        self.version = version
        self.digest = digest
        self.sample_rate = sample_rate
        self.on_dropped = on_dropped
        self.flush_seconds = flush_seconds
        self.flush_records = flush_records
        self.max_records = max_records
        self.clock = clock
        self._predictions: deque[tuple[str, float, np.ndarray[Any, Any]]] = deque()
        self._labels: deque[tuple[float, Label]] = deque()
        self._pending = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitoring-flush", daemon=True)
        self._last_failure_log = 0.0
        self.written = 0

    def start(self) -> MonitoringBuffer:
        self._thread.start()
        return self

    def _admit(self, records: int) -> bool:
        with self._lock:
            if self._pending + records > self.max_records:
                admitted = False
            else:
                self._pending += records
                admitted = True
            full = self._pending >= self.flush_records
        if not admitted:
            self.on_dropped(records)
        elif full:
            self._wake.set()
        return admitted

    def add_predictions(self, request_id: str, predictions: np.ndarray[Any, Any]) -> None:
        """Keep a request's predictions if its id is sampled (called on the request path: no I/O)."""
        if sampled(request_id, self.sample_rate) and self._admit(len(predictions)):
            self._predictions.append((request_id, self.clock(), predictions))

    def add_labels(self, labels: list[Label]) -> None:
        if labels and self._admit(len(labels)):
            when = self.clock()
            self._labels.extend((when, label) for label in labels)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write what is buffered now: at most one predictions object and one feedback object."""
        predictions: list[tuple[str, float, np.ndarray[Any, Any]]] = []
        labels: list[tuple[float, Label]] = []
        while self._predictions:
            predictions.append(self._predictions.popleft())
        while self._labels:
            labels.append(self._labels.popleft())
        now = self.clock()
        if predictions:
            lines = []
            for request_id, when, values in predictions:
                stamp = _iso(when)
                for row, value in enumerate(values.tolist()):
                    lines.append(
                        orjson.dumps(
                            {
                                "id": request_id,
                                "row": row,
                                "time": stamp,
                                "version": self.version,
                                "digest": self.digest,
                                "prediction": value,
                            }
                        )
                    )
            self._write(f"predictions/{self.version}/{_stamp(now)}-{uuid.uuid4().hex}.jsonl", lines)
        if labels:
            lines = [
                orjson.dumps({"id": label.id, "row": label.row, "time": _iso(when), "label": label.label})
                for when, label in labels
            ]
            self._write(f"feedback/{_stamp(now)}-{uuid.uuid4().hex}.jsonl", lines)

    def _write(self, key: str, lines: list[bytes]) -> None:
        try:
            self.sink.write(key, b"\n".join(lines) + b"\n")
            self.written += len(lines)
        except Exception as exc:  # any store failure: count and drop, never propagate
            self.on_dropped(len(lines))
            now = time.monotonic()
            if now - self._last_failure_log > 30.0:
                self._last_failure_log = now
                log.warning(
                    "monitoring write failed; records dropped",
                    extra={"key": key, "records": len(lines), "reason": f"{type(exc).__name__}: {exc}"[:300]},
                )
        finally:
            with self._lock:
                self._pending -= len(lines)

    def close(self) -> None:
        """Stop the flusher and write what is left (on shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.flush()
