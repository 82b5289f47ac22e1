"""Typed errors of the data plane, each carrying the HTTP status the REST adapter answers with.

The protocol's error body is `{"error": "<message>"}`; messages name the field at fault and
never echo request bodies back at length.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base: a request the server answers with `status` and `{"error": message}`."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServingError):
    """Malformed JSON, a wrong shape or datatype, a value the model cannot take."""

    status = 400


class ModelNotFound(ServingError):
    """A model name or version this server does not serve."""

    status = 404


class MethodNotAllowed(ServingError):
    status = 405


class Conflict(ServingError):
    """A request valid in form that this server's configuration cannot honour."""

    status = 409


class PayloadTooLarge(ServingError):
    status = 413


class UnsupportedMediaType(ServingError):
    status = 415


class NotReady(ServingError):
    """The model is loading, failed to load, or the server is draining."""

    status = 503


class Overloaded(ServingError):
    """The bounded request queue is full: refuse now rather than answer late."""

    status = 503
