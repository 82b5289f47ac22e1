"""Pipeline specs kept in the store by digest, so a Run can be reproduced after its Pipeline changed.

A record names the spec that ran by `pipelineSpecDigest`; `specs/<hex>.json` holds that spec (written by
`conveyor run` and `conveyor rerun`). Loading checks the digest again: a spec that does not hash to what
the record says is refused, never run in its place.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from conveyor.api.pipeline import PipelineSpec
from conveyor.core.record import spec_digest
from conveyor.storage.digest import hex_of
from conveyor.storage.store import ArtifactStore


def spec_document(digest: str) -> str:
    return f"specs/{hex_of(digest)}.json"


def store_spec(store: ArtifactStore, spec: PipelineSpec, pipeline: str) -> str:
    """Keep `spec` under its digest (idempotent); returns the digest."""
    digest = spec_digest(spec)
    name = spec_document(digest)
    if store.get_document(name) is None:
        store.put_document(name, {"digest": digest, "pipeline": pipeline, "spec": spec.to_wire()})
    return digest


def load_spec(store: ArtifactStore, digest: str) -> PipelineSpec | None:
    """The spec stored under `digest`, or None when absent or when it no longer hashes to it."""
    doc = store.get_document(spec_document(digest))
    if doc is None:
        return None
    return spec_matching(doc.get("spec"), digest)


def spec_matching(wire: Any, digest: str) -> PipelineSpec | None:
    """`wire` parsed, if it hashes to `digest`."""
    if not isinstance(wire, dict):
        return None
    try:
        spec = PipelineSpec.model_validate(wire)
    except ValidationError:
        return None
    return spec if spec_digest(spec) == digest else None


def without_cache(spec: PipelineSpec) -> PipelineSpec:
    """The same spec with every step's cache disabled, so a rerun really recomputes each step."""
    wire = spec.to_wire()
    for step in wire.get("steps", []):
        step["cache"] = {"enabled": False}
    return PipelineSpec.model_validate(wire)
