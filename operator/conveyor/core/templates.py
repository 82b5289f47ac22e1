"""Template substitution in step commands and configuration: {{ params.x }}, {{ inputs.data }}, ...

Deliberately tiny (dotted names only, no logic) so that every reference can be checked before a
Run starts: a typo is a validation error naming the field, never a surprise inside a pod.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")

# The namespaces a template may read; what each may contain depends on the step.
NAMESPACES = ("params", "inputs", "outputs", "item", "run")


class TemplateError(ValueError):
    """A template that cannot be resolved: names the reference."""


@dataclass(frozen=True)
class Reference:
    """One `{{ ... }}` occurrence, split into its dotted parts."""

    text: str
    parts: tuple[str, ...]


def references(text: str) -> Iterator[Reference]:
    """Every template reference in a string; malformed ones raise TemplateError."""
    for m in _TEMPLATE.finditer(text):
        expr = m.group(1)
        if not _REFERENCE.match(expr):
            raise TemplateError(f"malformed template {m.group(0)!r}: expected a dotted name like params.x")
        yield Reference(expr, tuple(expr.split(".")))


def strings_in(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, string) for every string inside a JSON-like value, for checking templates in `with`."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from strings_in(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings_in(v, f"{path}[{i}]")


def _lookup(context: Mapping[str, Any], ref: Reference) -> Any:
    value: Any = context
    for i, part in enumerate(ref.parts):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            where = ".".join(ref.parts[:i]) or "the template context"
            raise TemplateError(f"unknown template variable {ref.text!r}: {where} has no {part!r}")
    return value


def render(text: str, context: Mapping[str, Any]) -> Any:
    """Substitute every reference. A string that is exactly one template keeps the value's type
    (so `n_estimators: "{{ params.trees }}"` stays an integer); otherwise values are spliced as text."""
    whole = _TEMPLATE.fullmatch(text.strip())
    if whole:
        (ref,) = references(text.strip())
        return _lookup(context, ref)

    def splice(m: re.Match[str]) -> str:
        (ref,) = references(m.group(0))
        value = _lookup(context, ref)
        return value if isinstance(value, str) else json.dumps(value)

    return _TEMPLATE.sub(splice, text)


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """render() for places that only take text (command lines, environment): values as JSON text."""
    value = render(text, context)
    return value if isinstance(value, str) else json.dumps(value)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """render() applied to every string inside a JSON-like value."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value
