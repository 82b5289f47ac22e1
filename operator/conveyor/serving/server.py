"""Process wiring of the model server: flags, JSON logs, background loading, HTTP, graceful shutdown.

The port opens first and the model loads in a background thread (readiness answers 503
`{"error": "loading"}` meanwhile), so the operator can always read why a server is not ready: a
load failure is logged once and kept as the readiness error for the life of the process.

On SIGTERM readiness turns 503 at once; the server keeps serving for `--drain-seconds` (load
balancers need that long to take the endpoint out), then stops accepting connections, lets
in-flight requests finish, flushes the monitoring buffer and exits 0. A second SIGTERM or SIGINT
stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from conveyor.serving.dataplane import DataPlane
from conveyor.serving.metrics import ServerMetrics
from conveyor.serving.model import ModelLoadError, ModelSource, ServedModel, prepare_model_thread
from conveyor.serving.monitoring import MonitoringBuffer, open_sink
from conveyor.serving.rest import RestApp
from conveyor.storage.digest import hex_of

log = logging.getLogger("conveyor.serving")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


@dataclass(frozen=True)
class ServerConfig:
    model_name: str
    model_uri: str
    model_digest: str
    model_version: str
    host: str = "0.0.0.0"  # noqa: S104 - a server in a pod listens on every interface
    port: int = 8080
    s3_endpoint: str | None = None
    work_dir: Path | None = None
    monitoring_uri: str | None = None
    prediction_sample_rate: float = 0.1
    max_batch_size: int = 64
    max_queue: int = 1024
    max_body_bytes: int = 64 << 20
    drain_seconds: float = 5.0
    log_requests: bool = False
    model_threads: int = 1
    tree_threads: int = 1
    fast_path: bool = True


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m conveyor.serving",
        description="Serve one digest-verified model artifact over the Open Inference Protocol (v2 REST).",
    )
    p.add_argument("--model-name", required=True)
    p.add_argument("--model-uri", required=True, help="s3://bucket/key or file:///path")
    p.add_argument("--model-digest", required=True, help="sha256:<64 hex>; the artifact must hash to it")
    p.add_argument("--model-version", help="default: the first 12 hex characters of the digest")
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--s3-endpoint", default=None, help="default: $AWS_ENDPOINT_URL, else AWS")
    p.add_argument("--work-dir", type=Path, default=None, help="where the artifact is downloaded (default: a temp dir)")
    p.add_argument("--monitoring-uri", default=None, help="s3://bucket/prefix or file:///dir for samples and labels")
    p.add_argument("--prediction-sample-rate", type=_rate, default=0.1)
    p.add_argument("--max-batch-size", type=_positive, default=64, help="rows per model call (micro-batching)")
    p.add_argument("--max-queue", type=_positive, default=1024, help="requests waiting for the model; 503 beyond")
    p.add_argument("--max-request-bytes", type=_positive, default=64 << 20, help="413 beyond")
    p.add_argument("--drain-seconds", type=_seconds, default=5.0)
    p.add_argument("--model-threads", type=_positive, default=1, help="BLAS/OpenMP threads of the model call")
    p.add_argument(
        "--tree-threads",
        type=_positive,
        default=min(2, len(os.sched_getaffinity(0))),
        help="threads walking a random forest's trees for batches of 256 rows or more (default: 2 when there are "
        "2 CPUs; the answers do not depend on it)",
    )
    p.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_false",
        help="always call the full pipeline (the numpy fast path is used only when proven identical at load)",
    )
    p.add_argument("--log-requests", action="store_true", help="log every request, with its body")
    return p


def parse_config(argv: list[str] | None = None) -> ServerConfig:
    p = parser()
    args = p.parse_args(argv)
    try:
        hexdigest = hex_of(args.model_digest)
    except ValueError as exc:
        p.error(f"--model-digest: {exc}")
    if not _NAME.match(args.model_name):
        p.error("--model-name: letters, digits, '.', '_' and '-' only")
    version = args.model_version or hexdigest[:12]
    if not _NAME.match(version):
        p.error("--model-version: letters, digits, '.', '_' and '-' only")
    if not args.model_uri.startswith(("s3://", "file://")):
        p.error("--model-uri: s3://bucket/key or file:///path")
    if args.monitoring_uri is not None and not args.monitoring_uri.startswith(("s3://", "file://")):
        p.error("--monitoring-uri: s3://bucket/prefix or file:///dir")
    if args.work_dir is not None:  # created when missing, as a pod's emptyDir would be; refused when it cannot be
        try:
            args.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            p.error(f"--work-dir: cannot create {args.work_dir}: {exc.strerror or exc}")
    return ServerConfig(
        model_name=args.model_name,
        model_uri=args.model_uri,
        model_digest=args.model_digest,
        model_version=version,
        host=args.host,
        port=args.port,
        s3_endpoint=args.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
        work_dir=args.work_dir,
        monitoring_uri=args.monitoring_uri,
        prediction_sample_rate=args.prediction_sample_rate,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        max_body_bytes=args.max_request_bytes,
        drain_seconds=args.drain_seconds,
        log_requests=args.log_requests,
        model_threads=args.model_threads,
        tree_threads=args.tree_threads,
        fast_path=args.fast_path,
    )


# ---------------------------------------------------------------------------------------------
# Logs

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


# ---------------------------------------------------------------------------------------------
# Serving


def load_model(config: ServerConfig, dataplane: DataPlane, work_dir: Path) -> None:
    """Fetch, verify and load the model (on a background thread); record the reason when it fails."""
    source = ModelSource(config.model_uri, config.model_digest, config.s3_endpoint)
    began = time.monotonic()
    fields = {"model": config.model_name, "version": config.model_version, "digest": config.model_digest}
    try:
        model = ServedModel.load(
            config.model_name,
            config.model_version,
            source,
            work_dir,
            fast_path=config.fast_path,
            tree_threads=config.tree_threads,
        )
    except ModelLoadError as exc:
        dataplane.model_failed(str(exc))
        log.error("model load failed; the server will not become ready", extra={**fields, "reason": str(exc)})
        return
    except Exception as exc:
        reason = f"could not load the model: {type(exc).__name__}: {exc}"
        dataplane.model_failed(reason)
        log.exception("model load failed; the server will not become ready", extra={**fields, "reason": reason})
        return
    dataplane.model_loaded(model)
    log.info(
        "model loaded",
        extra={
            **fields,
            "task": model.task,
            "inputs": len(model.signature.names),
            "fast_path": model.fast_path,
            "seconds": round(time.monotonic() - began, 3),
        },
    )


def _uvicorn_server(config: ServerConfig, app: RestApp, dataplane: DataPlane) -> Any:
    import uvicorn  # noqa: PLC0415  # the HTTP stack loads when the server runs, not on import

    class DrainingServer(uvicorn.Server):
        """uvicorn's server with a drain period between the first SIGTERM and the stop."""

        drain_started = False
        loop: asyncio.AbstractEventLoop | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.drain_started or config.drain_seconds == 0 or self.loop is None:
                self.should_exit = True
                if self.drain_started:
                    self.force_exit = True
                return
            self.drain_started = True
            dataplane.start_draining()
            log.info(
                "draining: readiness is 503, serving continues",
                extra={"signal": signal.Signals(sig).name, "drain_seconds": config.drain_seconds},
            )
            self.loop.call_soon_threadsafe(self.loop.call_later, config.drain_seconds, self._stop)

        def _stop(self) -> None:
            log.info("drain over: no longer accepting connections")
            self.should_exit = True

    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="none",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        backlog=2048,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=30,
    )
    return DrainingServer(uv_config)


async def serve(config: ServerConfig) -> int:
    metrics = ServerMetrics(config.model_name, config.model_version)
    monitoring: MonitoringBuffer | None = None
    if config.monitoring_uri:
        sink = open_sink(config.monitoring_uri, config.s3_endpoint)
        monitoring = MonitoringBuffer(
            sink,
            version=config.model_version,
            digest=config.model_digest,
            sample_rate=config.prediction_sample_rate,
            on_dropped=metrics.monitoring_dropped.inc,
        ).start()
    dataplane = DataPlane(
        config.model_name,
        config.model_version,
        config.model_digest,
        metrics,
        monitoring=monitoring,
        max_batch_size=config.max_batch_size,
        max_queue=config.max_queue,
        executor=ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="model",
            initializer=prepare_model_thread,
            initargs=(config.model_threads,),
        ),
    )
    app = RestApp(dataplane, max_body_bytes=config.max_body_bytes, log_requests=config.log_requests)
    server = _uvicorn_server(config, app, dataplane)
    server.loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="conveyor-serving-", dir=config.work_dir) as work:

        async def load_when_listening() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.01)
            if server.started:
                log.info("listening", extra={"host": config.host, "port": config.port})
                threading.Thread(
                    target=load_model, args=(config, dataplane, Path(work)), name="model-load", daemon=True
                ).start()

        loader = asyncio.create_task(load_when_listening())
        try:
            await server.serve()
        finally:
            loader.cancel()
            dataplane.batcher.close()
            if monitoring is not None:
                monitoring.close()
    log.info("stopped", extra={"model": config.model_name, "version": config.model_version})
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    configure_logging()
    try:
        import uvloop  # noqa: PLC0415

        return uvloop.run(serve(config))
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        return asyncio.run(serve(config))
