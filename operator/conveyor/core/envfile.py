"""Pod env for the local runner: a dotenv file stands in for the cluster's Secrets and ConfigMaps.

On a cluster a step's `pod.env` entry `valueFrom: {secretKeyRef: ...}` or `{configMapKeyRef: ...}` is resolved by
the kubelet. Locally there are no such objects: `conveyor run --env-file FILE` gives the values, each under the
name of the variable it fills (what the step's program reads, as in a `.env` file written for it). Literal `value`
entries need no file. Pure: (text) → values, (spec, values) → each step's variables or the issues naming the field.
Nothing here puts a value into a message: an error names the file's line, the variable and its Secret or
ConfigMap, never what the file holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from conveyor.api.pipeline import PipelineSpec
from conveyor.api.pod import PodEnvVar, PodSettings, merge_pod_settings
from conveyor.core.validation import Issue, step_paths

_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def parse_env_file(text: str, source: str) -> tuple[dict[str, str], list[Issue]]:
    """dotenv lines: `KEY=VALUE`, optionally after `export `; `#` comments and blank lines are skipped.

    A value is unquoted (trimmed, ending at ` #`), in single quotes (taken as it is, across lines), or in double
    quotes (across lines, with \\n \\t \\r \\" \\\\ \\$ escapes). No `${VAR}` expansion: a password with a `$`
    stays as written. A key given twice keeps its last value, as dotenv tools do."""
    values: dict[str, str] = {}
    issues: list[Issue] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line.removeprefix("export ").lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        where = f"{source}:{number}"
        if not sep or not _NAME.fullmatch(key):
            issues.append(Issue(where, "expected KEY=VALUE, KEY a variable name (letters, digits, '_', '-', '.')"))
            continue
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            quote, body = rest[0], rest[1:]
            while _closing(body, quote) < 0 and i < len(lines):  # the value goes on over the next lines
                body += "\n" + lines[i]
                i += 1
            end = _closing(body, quote)
            if end < 0:
                issues.append(Issue(where, f"{key}: the {quote} quote is not closed"))
                continue
            after = body[end + 1 :].strip()
            if after and not after.startswith("#"):
                issues.append(Issue(where, f"{key}: text after the closing quote"))
                continue
            raw = body[:end]
            values[key] = raw if quote == "'" else _unescape(raw)
        else:
            values[key] = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
    return values, issues


def _closing(body: str, quote: str) -> int:
    """Index of the quote closing `body`, or -1 (a double quote may be escaped, a single one not)."""
    j = 0
    while j < len(body):
        if quote == '"' and body[j] == "\\":
            j += 2
            continue
        if body[j] == quote:
            return j
        j += 1
    return -1


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), raw, flags=re.DOTALL)


def _expand(value: str, earlier: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in a literal value: earlier variables of the list; `$$` is a `$`; an unknown
    reference stays as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return earlier.get(m.group(1), m.group(0))

    return _REFERENCE.sub(sub, value)


def _source(var: PodEnvVar) -> str:
    assert var.value_from is not None
    ref, kind = var.value_from.secret_key_ref, "Secret"
    if ref is None:
        ref, kind = var.value_from.config_map_key_ref, "ConfigMap"
    assert ref is not None
    return f"{kind} {ref.name!r} key {ref.key!r}"


def _optional(var: PodEnvVar) -> bool:
    assert var.value_from is not None
    ref = var.value_from.secret_key_ref or var.value_from.config_map_key_ref
    return ref is not None and ref.optional


def _missing(pod: PodSettings | None, path: str, values: Mapping[str, str], given: bool) -> list[Issue]:
    issues = []
    for n, var in enumerate(pod.env if pod is not None else []):
        if var.value_from is None or var.name in values or _optional(var):
            continue
        why = (
            f"is not in the --env-file (locally a valueFrom variable's value is the file's line {var.name}=...)"
            if given
            else "needs --env-file FILE with a line " + f"{var.name}=... (there are no Secrets or ConfigMaps locally)"
        )
        issues.append(Issue(f"{path}.env[{n}].valueFrom", f"{var.name} (from {_source(var)}) {why}"))
    return issues


def local_step_env(
    spec: PipelineSpec, values: Mapping[str, str] | None
) -> tuple[dict[str, dict[str, str]], list[Issue]]:
    """Each step's pod variables for the local runner (its own over the pipeline's, as on a cluster), with
    `valueFrom` entries taken from `values` (the --env-file) by the variable's name; an optional one missing
    there is left unset, as the kubelet leaves it. `values` None: no file was given. Issues name every
    non-optional valueFrom variable the file does not hold, at the field that declares it."""
    given = values is not None
    found = dict(values or {})
    issues = _missing(spec.pod, "spec.pod", found, given)
    for path, step in step_paths(spec):
        issues += _missing(step.pod, f"{path}.pod", found, given)
    envs: dict[str, dict[str, str]] = {}
    for _, step in step_paths(spec):
        env: dict[str, str] = {}
        for var in merge_pod_settings(spec.pod, step.pod).env:
            if var.value_from is None:
                env[var.name] = _expand(var.value, env)
            elif var.name in found:
                env[var.name] = found[var.name]
        if env:
            envs[step.name] = env
    return envs, issues
