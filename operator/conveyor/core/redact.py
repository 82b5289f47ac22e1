"""Keeping secret values out of the browser, the Run status and Events: redaction of names, URIs and text (pure).

Records hold no environment values by design, but they do hold what users typed: a parameter called
`api_token`, an input URI with a password or a presigned query, a failure message or a log line that
printed a credential. Everything the console sends passes through here first; what looks secret is
replaced by `REDACTED`, keeping the key so a person still sees what was there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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


# ---- a step's own secrets: the values its container was given from Secrets -----------------------------------------

SECRETS_ENV = "CONVEYOR_SECRETS"
"""The step container's variable naming (never holding) what came from Secrets: see `secret_sources`."""

# Variables a container has without the spec setting them: the image's, the kubelet's and service links.
_AMBIENT = re.compile(
    r"^(PATH|HOME|HOSTNAME|LANG|LANGUAGE|TERM|SHLVL|PWD|OLDPWD|TMPDIR|TZ|USER|SHELL|GPG_KEY|LC_\w+|PYTHON\w*|"
    r"VIRTUAL_ENV|SSL_CERT_\w+|REQUESTS_CA_BUNDLE|KUBERNETES_\w+|\w+_SERVICE_(HOST|PORT)\w*|\w+_PORT(_\w+)?|"
    r"CONVEYOR_\w+)$"
)
MIN_SECRET_CHARS = 4
"""Shorter values are not replaced: a Secret holding "1" must not blank every digit of a message."""


def secret_sources(
    env: Sequence[Mapping[str, Any]],
    env_from: Sequence[Mapping[str, Any]],
    mounts: Sequence[Mapping[str, Any]],
    volumes: Sequence[Mapping[str, Any]],
) -> dict[str, list[str]]:
    """What of a container's env, envFrom and mounts comes from Secrets, by name only (the operator never reads a
    Secret): variables from `secretKeyRef`, the prefixes of whole Secrets in envFrom (`""`: no prefix), the names
    set plainly (a literal or a ConfigMap key, so not secret), and the mount paths of Secret volumes."""
    secret_vols = {v["name"] for v in volumes if v.get("secret")}
    return {
        "env": sorted({e["name"] for e in env if (e.get("valueFrom") or {}).get("secretKeyRef")}),
        "prefixes": sorted({s.get("prefix") or "" for s in env_from if s.get("secretRef")}),
        "plain": sorted({e["name"] for e in env if not (e.get("valueFrom") or {}).get("secretKeyRef")}),
        "paths": sorted({m["mountPath"] for m in mounts if m.get("name") in secret_vols}),
    }


def secret_values(sources: Mapping[str, Any], environ: Mapping[str, str], files: Mapping[str, str]) -> list[str]:
    """The values to keep out of messages: the named variables', every variable a whole Secret may have set (its
    prefix; without one, every variable neither set plainly nor ambient: over-redacts an image's own variables
    rather than miss a key), and the Secret files' contents. Longest first, so a value inside another goes last."""
    named = set(sources.get("env") or ())
    plain = set(sources.get("plain") or ())
    prefixes = list(sources.get("prefixes") or ())
    values: set[str] = set()
    for name, value in environ.items():
        whole = any(name.startswith(p) if p else (name not in plain and not _AMBIENT.match(name)) for p in prefixes)
        if name in named or whole:
            values.update({value, value.strip()})
    for content in files.values():
        values.update({content, content.strip()})
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def redact_secrets(text: str, values: Sequence[str]) -> str:
    """`text` with every given secret value replaced, then the credential-looking patterns of `redact_text`."""
    for value in values:
        text = text.replace(value, REDACTED)
    return redact_text(text)
