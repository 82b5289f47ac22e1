"""Deterministic names and labels of the objects the operator creates, so a second create is a no-op."""

from __future__ import annotations

import hashlib
import re

LABEL_RUN = "conveyor.dev/run"
LABEL_STEP = "conveyor.dev/step"
LABEL_ATTEMPT = "conveyor.dev/attempt"
LABEL_ITEM = "conveyor.dev/item"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_MODEL_DEPLOYMENT = "conveyor.dev/model-deployment"
LABEL_TRACK = "conveyor.dev/track"
LABEL_MODEL_VERSION = "conveyor.dev/model-version"
ANNOTATION_MODEL_DIGEST = "conveyor.dev/model-digest"
ANNOTATION_MODEL_URI = "conveyor.dev/model-uri"
MANAGER = "conveyor"


def _clean(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")


def job_name(run: str, step: str, attempt: int) -> str:
    """At most 63 characters (the Job controller copies it into a label); a hash keeps truncated names unique.
    `step` is a state key: a step name, or `step[i]` for one item of a fan-out."""
    digest = hashlib.sha256(f"{run}/{step}".encode()).hexdigest()[:6]
    head = f"{_clean(run)[:28].strip('-')}-{_clean(step)[:20].strip('-')}"
    return f"{head}-{digest}-{attempt}"


def label_value(text: str) -> str:
    """A label value (63 characters at most, alphanumeric at both ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return cleaned.strip("-_.")
