"""What a function step runs inside its image: the function's source, from the spec, called with its arguments.

    python -m conveyor.sdk.function_runtime NAME KIND:ARG=TEXT ...

The source comes in CONVEYOR_FUNCTION_SOURCE (CONVEYOR_FUNCTION_SOURCE_B64 when it holds text the step
templates would read). Each argument's text is what the step runtime rendered: a path for an input or an
output, otherwise a parameter's value as text (JSON for anything but a string). A returned mapping of numbers
becomes the step's metrics. Standard library only, beyond the step runtime that starts it.
"""

from __future__ import annotations
import __future__

import base64
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

KINDS = ("input", "output", "str", "int", "float", "bool", "list", "json")


def source_from(environ: Mapping[str, str]) -> str:
    if "CONVEYOR_FUNCTION_SOURCE_B64" in environ:
        return base64.b64decode(environ["CONVEYOR_FUNCTION_SOURCE_B64"]).decode()
    return environ["CONVEYOR_FUNCTION_SOURCE"]


def convert(kind: str, text: str) -> Any:
    """An argument's rendered text → the value the function is given."""
    if kind in ("input", "output"):
        return Path(text)
    if kind == "str":
        return text
    if kind == "json":
        try:
            return json.loads(text)
        except ValueError:
            return text
    value = json.loads(text)
    if kind == "int" and isinstance(value, int | float) and not isinstance(value, bool) and int(value) == value:
        return int(value)
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if (kind == "bool" and isinstance(value, bool)) or (kind == "list" and isinstance(value, list)):
        return value
    raise ValueError(f"expected {kind}, got {text!r}")


def load_function(name: str, source: str) -> Callable[..., Any]:
    """The function `name` defined by `source` (annotations left unevaluated: they name SDK types)."""
    namespace: dict[str, Any] = {"__name__": f"conveyor_function_{name}"}
    code = compile(source, f"<function step {name}>", "exec", flags=__future__.annotations.compiler_flag)
    exec(code, namespace)  # noqa: S102 - running the pipeline's own function is the point of a function step
    function = namespace[name]
    assert callable(function)
    return function  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    name, pairs = args[0], args[1:]
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        kind, _, rest = pair.partition(":")
        arg, _, text = rest.partition("=")
        if kind not in KINDS:
            print(f"function step {name}: unknown argument kind {kind!r}", file=sys.stderr)
            return 2
        try:
            kwargs[arg] = convert(kind, text)
        except ValueError as e:
            print(f"function step {name}: argument {arg}: {e}", file=sys.stderr)
            return 2
    result = load_function(name, source_from(env))(**kwargs)
    if result is None:
        return 0
    if not isinstance(result, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in result.values()
    ):
        print(f"function step {name}: returned {result!r}; return a dict of metrics (numbers) or None", file=sys.stderr)
        return 1
    metrics_file = env.get("CONVEYOR_METRICS_FILE")
    if metrics_file:
        Path(metrics_file).write_text(json.dumps({str(k): float(v) for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
