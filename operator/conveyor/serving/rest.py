"""The REST adapter: a bare ASGI application mapping HTTP onto the data plane (no web framework).

Routes are matched by splitting the path once; request bodies are read with a size limit
(413 past it); `ServingError`s become their status with the protocol's `{"error": ...}` body, and
anything unexpected becomes a logged 500 that names only the exception type. Inference requests
(`.../infer` and `/predict`) are counted by status and timed; health, readiness and metadata calls
are not counted, so probes never dilute or fake the error rate a canary is judged on. While
draining, responses carry `Connection: close` so clients move to other endpoints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conveyor.serving.codec import error_body
from conveyor.serving.dataplane import DataPlane
from conveyor.serving.errors import (
    BadRequest,
    MethodNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    ServingError,
)

log = logging.getLogger("conveyor.serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = b"application/json"
_BINARY = b"application/octet-stream"
_HEADER_LENGTH = b"inference-header-content-length"
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class Response:
    __slots__ = ("body", "content_type", "extra", "status")

    def __init__(
        self, status: int, body: bytes, content_type: bytes = _JSON, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.extra = extra


def _json(document: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(document, option=_OPTIONS))


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class RestApp:
    """The ASGI application."""

    def __init__(self, dataplane: DataPlane, *, max_body_bytes: int = 64 << 20, log_requests: bool = False) -> None:
        self.dataplane = dataplane
        self.metrics = dataplane.metrics
        self.max_body_bytes = max_body_bytes
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        counted = path == "/predict" or (path.startswith("/v2/models/") and path.endswith("/infer"))
        timed = path == "/predict" or path.endswith("/infer")
        body = b""
        if counted:
            self.metrics.inflight.inc()
        try:
            try:
                response, body = await self._dispatch(scope, receive, path)
            except ServingError as exc:
                response = Response(exc.status, error_body(exc.message))
            except Exception as exc:
                log.exception("request failed", extra={"path": path, "error": type(exc).__name__})
                response = Response(500, error_body(f"internal error ({type(exc).__name__})"))
            headers = [(b"content-type", response.content_type), (b"content-length", str(len(response.body)).encode())]
            if response.extra:
                headers.extend(response.extra)
            if self.dataplane.draining:
                headers.append((b"connection", b"close"))
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            await send({"type": "http.response.body", "body": response.body})
        finally:
            if counted:
                self.metrics.inflight.dec()
        if counted:
            self.metrics.count(response.status)
            if timed:
                self.metrics.duration.observe(time.perf_counter() - started)
        if self.log_requests:
            log.info(
                "request served",
                extra={
                    "method": scope["method"],
                    "path": path,
                    "status": response.status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "body": body[:2048].decode(errors="replace"),
                },
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        _check_content_type(_header(scope, b"content-type"))
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise BadRequest("invalid Content-Length") from None
            if length > self.max_body_bytes:
                raise PayloadTooLarge(f"request body of {length} bytes is over the limit of {self.max_body_bytes}")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client disconnected")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise PayloadTooLarge(f"request body is over the limit of {self.max_body_bytes} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _dispatch(self, scope: Scope, receive: Receive, path: str) -> tuple[Response, bytes]:
        """The response and the body read (for logging)."""
        method: str = scope["method"]
        dp = self.dataplane
        if path == "/v2/health/live":
            return _json(dp.live()), b""
        if path == "/v2/health/ready":
            return _json(dp.ready()), b""
        if path in ("/v2", "/v2/"):
            return _json(dp.server_metadata()), b""
        if path == "/metrics":
            return Response(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST.encode()), b""
        if path == "/predict":
            _require(method, "POST")
            body = await self._read_body(scope, receive)
            return _json(await dp.predict(body)), body
        parts = path.split("/")
        # ["", "v2", "models", name, ...]
        if len(parts) < 4 or parts[1] != "v2" or parts[2] != "models" or not parts[3]:
            raise ModelNotFound(f"no route {path!r}")
        name = parts[3]
        rest = parts[4:]
        version: str | None = None
        if len(rest) >= 2 and rest[0] == "versions" and rest[1]:
            version = rest[1]
            rest = rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1:
            raise ModelNotFound(f"no route {path!r}")
        if action == "":
            _require(method, "GET")
            return _json(dp.model_metadata(name, version)), b""
        if action == "ready":
            _require(method, "GET")
            return _json(dp.model_ready(name, version)), b""
        if action == "infer":
            _require(method, "POST")
            body = await self._read_body(scope, receive)
            header = _header(scope, _HEADER_LENGTH)
            header_length: int | None = None
            if header is not None:
                try:
                    header_length = int(header)
                except ValueError:
                    raise BadRequest("Inference-Header-Content-Length must be an integer") from None
            result, binary_length = await dp.infer(name, version, body, header_length)
            if binary_length is None:
                return Response(200, result), body
            return Response(200, result, _BINARY, [(_HEADER_LENGTH, str(binary_length).encode())]), body
        if action == "feedback":
            _require(method, "POST")
            body = await self._read_body(scope, receive)
            return _json(dp.feedback(name, version, body), status=202), body
        raise ModelNotFound(f"no route {path!r}")


_BODY_TYPES = (b"application/json", b"application/octet-stream")
"""What a request body may be declared as: JSON, or the binary tensor extension (JSON header, then bytes)."""


def _check_content_type(declared: bytes | None) -> None:
    """Refuse a body declared as something else (text/plain, a form): it is not what the protocol reads.
    No Content-Type at all is read as JSON, as the protocol's own clients send it."""
    if declared is None:
        return
    media = declared.split(b";", 1)[0].strip().lower()
    if media not in _BODY_TYPES and not media.endswith(b"+json"):
        raise BadRequest(
            f"Content-Type {media.decode(errors='replace')!r} is not accepted: send application/json "
            "(or application/octet-stream with Inference-Header-Content-Length)"
        )


def _require(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"method {method} is not allowed here (use {allowed})")
