"""Cache keys: a digest over everything that determines a step's outputs, and nothing else.

Covered: the resolved template (component and configuration, or image, command and env after
parameter substitution), the fan-out item, and the content digests of the inputs. Not covered:
parameters the step does not reference, names of runs, timestamps. So changing preprocessing
changes its key, its output digests, and therefore the keys of everything downstream, and only that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Bumped when the runtime's behaviour changes in a way that invalidates earlier outputs.
CACHE_FORMAT = "conveyor-cache-v1"


def cache_key(
    *,
    template: Mapping[str, Any],
    input_digests: Mapping[str, str],
    item: Any = None,
    code_version: str,
) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "code": code_version,
        "template": template,
        "inputs": dict(sorted(input_digests.items())),
        "item": item,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return f"sha256:{hashlib.sha256(canonical).hexdigest()}"
