"""The contract between the step runtime and the built-in components.

A component is a plain function over local files: it never sees Kubernetes or S3. The
step runtime fetches its inputs, validates its configuration with the component's pydantic
model (unknown keys are errors that name the key), calls it, then stores what it wrote to
`outputs` with digests. The same component therefore runs on the local runner and in a Job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

# Metrics a component reports (accuracy, row counts, ...): small, numeric, kept in the Run status.
Metrics = dict[str, float]


class ComponentConfig(BaseModel):
    """Base of every component's `with:` configuration: unknown keys are rejected by name."""

    model_config = ConfigDict(extra="forbid")


class ComponentError(Exception):
    """Bad input to a component (a missing column, an empty dataset): the step fails with this message."""


@dataclass(frozen=True)
class Component:
    """A built-in step: what it needs, what it makes, and the function that does it."""

    name: str
    config: type[ComponentConfig]
    run: Callable[[ComponentConfig, Mapping[str, Path], Mapping[str, Path]], Metrics]
    """run(config, inputs, outputs): inputs are local files (a fan-in input is a directory with
    items.json listing one entry per fanned-out item); outputs are the paths it must write."""
    required_inputs: frozenset[str] = field(default_factory=frozenset)
    optional_inputs: frozenset[str] = field(default_factory=frozenset)
    outputs: frozenset[str] = field(default_factory=frozenset)
    description: str = ""
    reads_outside_world: Callable[[Mapping[str, Any]], bool] = field(default=lambda _config: False)
    """Whether a step with this (resolved) configuration reads data that its inputs do not pin down (a URL,
    a bucket, a database): such a step is never served from the cache, since the same key could name changed
    content. Its outputs are content-addressed, so unchanged data still gives cache hits downstream."""
    content_uris: Callable[[Mapping[str, Any]], tuple[str, ...]] = field(default=lambda _config: ())
    """Outside data a shell can digest (`file://` URIs) that the (resolved) configuration names: with each
    one's content digest in the cache key, the step is cached like any other, and a changed file changes
    the key. A shell that cannot digest one (the operator cannot read a pod's files) never serves the step
    from the cache."""
