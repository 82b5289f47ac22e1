"""A JSON merge patch (RFC 7386) applied as the API server applies it, for the unit tests' fake API servers
(test harness code; the operator's own merge_patch, in controller/modeldeployments.py, computes the patch)."""

from __future__ import annotations

from typing import Any


def apply_merge_patch(old: Any, patch: Any) -> Any:
    """`old` with `patch` applied: a null removes a key, a mapping merges, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(old) if isinstance(old, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_merge_patch(out.get(k), v)
    return out
