"""Every PromQL expression of the chart's Grafana dashboards, with the template variables filled in
as Grafana would (test harness code).

So a test can run each panel's queries against a real Prometheus and fail naming the panel whose
query returns nothing. Variables are filled from the values a test gives (a multi-value or "All"
variable as Grafana's Prometheus data source formats it: a regex alternation, specials escaped),
Grafana's own ``$__range``, ``$__rate_interval``, ``$__interval`` (and their ``_s``/``_ms`` forms)
from the durations given. A variable the dashboard uses without a value fails at once, naming it.

    for q in dashboard_queries({"namespace": ["team-a"]}, range_="10m"):
        assert prom.query(q.expr), f"{q.dashboard}: panel {q.panel!r} ({q.ref_id}) returned no data: {q.expr}"

The variables' own queries (``label_values(selector, label)``) come too, as ``kind == "variable"``
with the selector as the expression: an empty one leaves the dashboard's drop-down empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testenv.binaries import REPO_ROOT

DASHBOARDS = REPO_ROOT / "charts" / "conveyor" / "dashboards"
ALL = "$__all"
"""The value of a variable set to Grafana's "All" option (its allValue, e.g. `.*`)."""

# Characters Grafana's Prometheus data source escapes in multi-value variables: a backslash for
# the regex, doubled because the value lands inside a PromQL string literal.
_REGEX_SPECIALS = re.compile(r"[$^*{}\[\]'+?.()|\\]")
_REFERENCE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$([A-Za-z_]\w*)")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UnfilledVariableError(LookupError):
    """A dashboard expression uses a variable no value was given for (the message names it and the panel)."""


@dataclass(frozen=True)
class DashboardQuery:
    """One PromQL expression of a dashboard, ready to send to Prometheus."""

    dashboard: str
    """The dashboard's title."""
    panel: str
    """The panel's title (for a variable: "variable NAME")."""
    ref_id: str
    """The target's refId within its panel (A, B, ...)."""
    expr: str
    kind: str = "panel"
    """"panel" or "variable"."""
    legend: str = ""


def seconds(duration: str) -> float:
    """A Grafana/Prometheus duration such as 1m30s in seconds."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def _format(value: str | Sequence[str], variable: Mapping[str, Any]) -> str:
    """A value as Grafana's Prometheus data source puts it into an expression."""
    if value == ALL:
        if variable.get("allValue"):
            return str(variable["allValue"])
        raise UnfilledVariableError(f"variable {variable['name']!r} has no allValue: give its values instead of ALL")
    multi = bool(variable.get("multi") or variable.get("includeAll"))
    values = [value] if isinstance(value, str) else list(value)
    if not multi:
        if len(values) != 1:
            raise ValueError(f"variable {variable['name']!r} takes one value, got {values}")
        return values[0]
    escaped = [_REGEX_SPECIALS.sub(lambda m: "\\\\" + m.group(0), v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def _builtins(range_: str, rate_interval: str, interval: str) -> dict[str, str]:
    r, i = seconds(range_), seconds(interval)
    return {
        "__range": range_,
        "__range_s": f"{r:g}",
        "__range_ms": f"{r * 1000:g}",
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__interval_ms": f"{i * 1000:g}",
    }


def fill(text: str, values: Mapping[str, str], where: str) -> str:
    """``text`` with every $var, ${var}, ${var:fmt} and [[var]] replaced; UnfilledVariableError naming ``where``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in values:
            return values[name]
        raise UnfilledVariableError(f"{where}: no value for ${name} in {text!r}")

    return _REFERENCE.sub(replace, text)


def _panels(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Every panel, also those inside (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _is_prometheus(datasource: Any) -> bool:
    """Targets without a data source of their own use the panel's / dashboard's: Prometheus here."""
    if isinstance(datasource, Mapping):
        return bool(datasource.get("type", "prometheus") == "prometheus")
    return datasource is None or (isinstance(datasource, str) and not datasource.startswith("-- "))


def dashboard_queries(
    values: Mapping[str, str | Sequence[str]],
    *,
    range_: str = "10m",
    rate_interval: str = "1m",
    interval: str = "15s",
    directory: Path = DASHBOARDS,
) -> list[DashboardQuery]:
    """Every panel target's expression (and every variable's selector) of directory/*.json, filled in.

    ``values`` maps each variable name to a value, a list of values, or ALL; ``range_`` is the
    dashboard's time range ($__range), ``rate_interval`` what Grafana would compute for
    $__rate_interval (at least four scrape intervals), ``interval`` the step ($__interval).
    """
    found: list[DashboardQuery] = []
    files = sorted(directory.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no dashboards in {directory}")
    for path in files:
        dashboard = json.loads(path.read_text())
        title = dashboard.get("title", path.name)
        filled = _builtins(range_, rate_interval, interval)
        variables = dashboard.get("templating", {}).get("list", [])
        for variable in variables:
            name = variable["name"]
            if variable.get("type") == "datasource":
                filled[name] = str(values.get(name, "prometheus"))  # only in datasource uids, never in PromQL
            elif name in values:
                filled[name] = _format(values[name], variable)
        for variable in variables:
            if variable.get("type") != "query":
                continue
            query = variable["query"]["query"] if isinstance(variable["query"], Mapping) else variable["query"]
            where = f"{title}: variable {variable['name']}"
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
            expr = selector.group(1) if selector else query  # query_result(expr) and the like: as is
            found.append(
                DashboardQuery(title, f"variable {variable['name']}", "", fill(expr, filled, where), "variable")
            )
        for panel in _panels(dashboard.get("panels", [])):
            if panel.get("type") == "row" or not _is_prometheus(panel.get("datasource")):
                continue
            panel_title = fill(panel.get("title", ""), filled, f"{title}: panel title {panel.get('title')!r}")
            for target in panel.get("targets", []):
                if "expr" not in target or not _is_prometheus(target.get("datasource")):
                    continue
                ref = target.get("refId", "")
                where = f"{title}: panel {panel_title!r} target {ref}"
                found.append(
                    DashboardQuery(
                        title,
                        panel_title,
                        ref,
                        fill(target["expr"], filled, where),
                        legend=target.get("legendFormat", ""),
                    )
                )
    return found
