"""YAML text → documents, bounded: document size, nesting depth and alias expansion, for every reader.

The CLI reads files with `load_yaml`; the operator gets bodies already parsed by the API server and checks
them with `object_problem`. Both use the limits below, so a document one accepts the other accepts too.
The size limit is the API server's own (1.5 MiB per object); depth and expansion are checked on the YAML
event stream before any node is built, so a 400-byte alias bomb is refused in milliseconds and a deeply
nested one never reaches PyYAML's recursive composer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

MAX_DOCUMENT_BYTES = 3 * 1024 * 1024 // 2
"""The API server's limit for one object (1.5 MiB): a bigger document could never be applied."""
MAX_DEPTH = 64
"""Collections nested in one another; a pipeline needs about 10."""
MAX_NODES = 1_000_000
"""Nodes of a file once aliases are expanded: more than a file of MAX_DOCUMENT_BYTES could spell out."""


@dataclass(frozen=True)
class DocumentTooLarge(ValueError):
    """A document over one of the limits: where (a line, or the file) and what."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


def _line(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(document)"


def check_yaml(text: str) -> None:
    """Raise DocumentTooLarge when `text` is over a limit, reading only its event stream (no nodes built)."""
    size = len(text.encode())
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(
            "(file)",
            f"{size:,} bytes, over the limit of {MAX_DOCUMENT_BYTES:,} bytes (1.5 MiB, the API server's for an object)",
        )
    expanded: dict[str, int] = {}  # anchor → nodes it stands for, its aliases expanded
    open_at: list[tuple[str | None, int]] = []  # per open collection: (anchor, nodes before it)
    nodes = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            nodes += expanded.get(str(event.anchor), 1)
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                expanded[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(open_at) >= MAX_DEPTH:
                raise DocumentTooLarge(_line(event), f"nested more than {MAX_DEPTH} levels deep (the limit)")
            open_at.append((event.anchor, nodes))
            nodes += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_at.pop()
            if anchor is not None:
                expanded[anchor] = nodes - before
        if nodes > MAX_NODES:
            raise DocumentTooLarge(
                _line(event), f"aliases expand the file to more than {MAX_NODES:,} nodes (an alias bomb?)"
            )


def load_yaml(text: str) -> list[Any]:
    """Every non-empty document of a (multi-document) YAML text, within the limits; raises DocumentTooLarge
    or yaml.YAMLError."""
    check_yaml(text)
    return [d for d in yaml.safe_load_all(text) if d is not None]


def object_problem(data: Any) -> str | None:
    """Why an already parsed object (an API server body) is over the nesting limit, or None.

    Its size needs no check here: the API server refuses an object over MAX_DOCUMENT_BYTES itself."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping | list) and depth >= MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep (the limit)"
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return None
