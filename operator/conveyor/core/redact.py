"""Keeping secret values out of the browser, the Run status and Events: redaction of names, URIs and text (pure).

Records hold no environment values by design, but they do hold what users typed: a parameter called
`api_token`, an input URI with a password or a presigned query, a failure message or a log line that
printed a credential. Everything the console sends passes through here first; what looks secret is
replaced by `REDACTED`, keeping the key so a person still sees what was there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "•••redacted•••"

_SECRET_NAME = re.compile(
    r"(secret|token|passw(or)?d|passwd|pwd|credential|api[-_]?key|access[-_]?key|private[-_]?key|auth(?!or)|session"
    r"|signature|cookie|bearer)",
    re.IGNORECASE,
)
# scheme://user:password@host → scheme://user:REDACTED@host (a user name alone is kept)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<password>[^/\s@]+)@")
# ?X-Amz-Signature=...&token=... → the value of each sensitive query parameter
_QUERY = re.compile(r"(?P<key>[?&][^=&#\s]+)=(?P<value>[^&#\s]*)")
# NAME=value, NAME: value, "NAME": "value" where NAME looks secret (log lines, messages)
_ASSIGNMENT = re.compile(
    r"(?P<key>\b[\w.-]*" + _SECRET_NAME.pattern + r"[\w.-]*[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;&]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<key>\bBearer\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL)


def secret_name(name: str) -> bool:
    """Whether a key, parameter or variable name says its value is a secret."""
    return bool(_SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    """`text` with every credential-looking value replaced (the surrounding words kept)."""
    text = _PRIVATE_KEY.sub(REDACTED, text)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    text = _QUERY.sub(lambda m: f"{m['key']}={REDACTED}" if secret_name(m["key"]) else m[0], text)
    text = _BEARER.sub(lambda m: f"{m['key']}{REDACTED}", text)
    text = _ASSIGNMENT.sub(lambda m: f"{m['key']}{REDACTED}", text)
    return _AWS_KEY_ID.sub(REDACTED, text)


def redact(value: Any, key: str = "") -> Any:
    """A JSON value with secret-named keys' values and credential-looking strings redacted, recursively."""
    if key and secret_name(key) and isinstance(value, str):  # numbers pass: a metric `tokens_per_s` is no secret
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
