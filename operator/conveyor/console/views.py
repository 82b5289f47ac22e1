"""What the browser sees: run records turned into the console's JSON documents (pure, redacted).

Every document is built from a record that went through `redact` first, and only from fields named
here, so nothing a record happens to carry (machine paths of live log files, whatever a later record
version adds) reaches the browser unreviewed. The DAG and the timing chart are the SVGs `conveyor
report` draws (cli/graph.py, cli/report.py), which escape every name themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor.cli.graph import Graph, Node, to_svg
from conveyor.cli.records import comparison, split_log_name
from conveyor.cli.report import gantt_svg
from conveyor.core.redact import redact
from conveyor.kube.timestamps import parse_timestamp

FINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})
RUN_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Cancelled")
PER_PAGE, MAX_PER_PAGE = 25, 200


@dataclass(frozen=True)
class RunRow:
    """One line of the runs list."""

    id: str
    pipeline: str
    phase: str
    started: datetime | None
    seconds: float | None
    progress: str
    namespace: str = ""
    """The Run's namespace on a cluster (locally none)."""
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "phase": self.phase,
            "startedAt": self.started.isoformat() if self.started else None,
            "seconds": self.seconds,
            "progress": self.progress,
            "namespace": self.namespace,
            "labels": redact(dict(self.labels)),
        }


def run_row(record: Mapping[str, Any], started_fallback: datetime | None) -> RunRow:
    steps = record.get("steps", [])
    done = sum(1 for s in steps if s.get("phase") in ("Succeeded", "Failed", "Skipped", "Cancelled"))
    return RunRow(
        id=str(record["runId"]),
        pipeline=str(record.get("pipeline") or ""),
        phase=str(record.get("phase") or ""),
        started=parse_timestamp(record.get("startedAt")) or started_fallback,
        seconds=record.get("seconds"),
        progress=f"{done}/{len(steps)}",
    )


@dataclass(frozen=True)
class RunQuery:
    """The runs list's filters and page, as the API's query string gives them."""

    pipeline: str = ""
    phase: str = ""
    namespace: str = ""
    labels: tuple[tuple[str, str | None], ...] = ()
    """`label=KEY=VALUE` (that value) or `label=KEY` (any value), all of them must hold."""
    since: datetime | None = None
    until: datetime | None = None
    page: int = 1
    per_page: int = PER_PAGE


class BadQuery(ValueError):
    """A query parameter the API cannot use; the message names it."""


def parse_query(params: Mapping[str, Sequence[str]]) -> RunQuery:
    def one(name: str) -> str:
        values = params.get(name) or [""]
        return values[-1].strip()

    def when(name: str) -> datetime | None:
        text = one(name)
        if not text:
            return None
        try:
            moment = parse_timestamp(text)
        except ValueError:
            moment = None
        if moment is None:
            raise BadQuery(f"{name}: expected an ISO 8601 time with a zone, got {text!r}")
        return moment

    def number(name: str, default: int, top: int) -> int:
        text = one(name)
        if not text:
            return default
        if not text.isdigit() or not 1 <= int(text) <= top:
            raise BadQuery(f"{name}: expected an integer from 1 to {top}, got {text!r}")
        return int(text)

    phase = one("phase")
    if phase and phase not in RUN_PHASES:
        raise BadQuery(f"phase: expected one of {', '.join(RUN_PHASES)}, got {phase!r}")
    labels = []
    for text in params.get("label") or []:
        key, sep, value = text.strip().partition("=")
        if not key:
            raise BadQuery(f"label: expected KEY=VALUE or KEY, got {text!r}")
        labels.append((key, value if sep else None))
    return RunQuery(
        pipeline=one("pipeline"),
        phase=phase,
        namespace=one("namespace"),
        labels=tuple(labels),
        since=when("since"),
        until=when("until"),
        page=number("page", 1, 1_000_000),
        per_page=number("per", PER_PAGE, MAX_PER_PAGE),
    )


def runs_page(rows: Sequence[RunRow], q: RunQuery) -> dict[str, Any]:
    """The rows that pass the filters, newest first, one page of them, and what the filters can choose from."""

    def newest_first(r: RunRow) -> tuple[float, str]:
        return (-(r.started.timestamp() if r.started else 0.0), r.id)

    chosen = [
        r
        for r in rows
        if (not q.pipeline or r.pipeline == q.pipeline)
        and (not q.phase or r.phase == q.phase)
        and (not q.namespace or r.namespace == q.namespace)
        and all(k in r.labels and (v is None or r.labels[k] == v) for k, v in q.labels)
        and (q.since is None or (r.started is not None and r.started >= q.since))
        and (q.until is None or (r.started is not None and r.started <= q.until))
    ]
    chosen.sort(key=newest_first)
    pages = max(1, -(-len(chosen) // q.per_page))
    start = (q.page - 1) * q.per_page
    return {
        "runs": [r.to_json() for r in chosen[start : start + q.per_page]],
        "total": len(chosen),
        "page": q.page,
        "pages": pages,
        "perPage": q.per_page,
        "pipelines": sorted({r.pipeline for r in rows if r.pipeline}),
        "namespaces": sorted({r.namespace for r in rows if r.namespace}),
        "phases": list(RUN_PHASES),
    }


# ------------------------------------------------------------------ one run


def _attempt_logs(names: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        key, attempt = split_log_name(name)
        out.append({"key": key, "attempt": attempt})
    return out


def _fan_out_text(step: Mapping[str, Any]) -> str:
    fan = step.get("fanOut") or {}
    if not fan:
        return ""
    parts = [f"{fan.get('succeeded', 0)}/{fan.get('total', 0)} items"]
    for what in ("failed", "running", "skipped"):
        if fan.get(what):
            parts.append(f"{fan[what]} {what}")
    return ", ".join(parts)


def dag_svg(steps: Sequence[Mapping[str, Any]], depends_on: Mapping[str, Sequence[str]], title: str) -> str:
    """The report's DAG drawing, with each fan-out's item counts on its node."""
    g = Graph()
    for s in steps:
        state = "cached" if s.get("cacheHit") else str(s.get("phase") or "Pending")
        what = s.get("component") or s.get("image") or ""
        detail = "  ".join(x for x in (_fan_out_text(s) or what, "cache hit" if s.get("cacheHit") else "") if x)
        g.add(Node(str(s["name"]), str(s["name"]), detail, state))
    names = {s["name"] for s in steps}
    for s in steps:
        ups = [i["step"] for i in s.get("inputs", []) if i.get("step")] + list(depends_on.get(s["name"], []))
        for u in ups:
            if u in names:
                g.link(u, s["name"])
    return to_svg(g, title)


def _item_view(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": item.get("key"),
        "index": item.get("index"),
        "phase": item.get("phase"),
        "attempts": item.get("attempts", 0),
        "cacheHit": bool(item.get("cacheHit")),
        "seconds": _span(item),
        "message": item.get("message"),
        "metrics": dict(item.get("metrics") or {}),
        "outputs": [_output(o) for o in item.get("outputs", [])],
    }


def _span(s: Mapping[str, Any]) -> float | None:
    if s.get("seconds") is not None:
        return float(s["seconds"])
    a, b = parse_timestamp(s.get("startedAt")), parse_timestamp(s.get("finishedAt"))
    return round((b - a).total_seconds(), 3) if a and b else None


def _output(o: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": o.get("name"), "digest": o.get("digest"), "size": o.get("size"), "uri": o.get("uri")}


def _input(i: Mapping[str, Any]) -> dict[str, Any]:
    source = f"{i['step']}.{i['output']}" if i.get("step") else i.get("uri")
    return {"name": i.get("name"), "from": source, "step": i.get("step"), "digest": i.get("digest")}


def step_view(
    step: Mapping[str, Any], items: Sequence[Mapping[str, Any]], attempts: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """`attempts`: one entry per attempt (attempt, startedAt, finishedAt, outcome, message), where the source
    keeps them; a record holds only the last attempt's times."""
    return {
        "name": step["name"],
        "attemptList": [
            {k: a.get(k) for k in ("attempt", "startedAt", "finishedAt", "outcome", "message")} for a in attempts
        ],
        "phase": step.get("phase"),
        "attempts": step.get("attempts", 0),
        "cacheHit": bool(step.get("cacheHit")),
        "cacheKey": step.get("cacheKey"),
        "component": step.get("component"),
        "image": step.get("image"),
        "startedAt": step.get("startedAt"),
        "finishedAt": step.get("finishedAt"),
        "seconds": _span(step),
        "message": step.get("message"),
        "parameters": dict(step.get("parameters") or {}),
        "metrics": dict(step.get("metrics") or {}),
        "inputs": [_input(i) for i in step.get("inputs", [])],
        "outputs": [_output(o) for o in step.get("outputs", [])],
        "logs": _attempt_logs(step.get("logs", [])),
        "fanOut": step.get("fanOut"),
        "fanOutText": _fan_out_text(step),
        "items": [_item_view(i) for i in items],
    }


def failure(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """Why a run failed: its reason and message, and each failed step's or item's own message."""
    if record.get("phase") != "Failed":
        return None
    failed = [
        {"step": s["name"], "message": s.get("message") or ""}
        for s in record.get("steps", [])
        if s.get("phase") == "Failed"
    ]
    for name, items in (record.get("items") or {}).items():
        failed += [
            {"step": f"{name} item {i.get('index')}", "message": i.get("message") or ""}
            for i in items
            if i.get("phase") == "Failed"
        ]
    return {"reason": record.get("reason") or "", "message": record.get("message") or "", "steps": failed}


def run_view(
    record: Mapping[str, Any],
    depends_on: Mapping[str, Sequence[str]],
    plots: Sequence[Mapping[str, Any]] = (),
    attempts: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    *,
    live: bool = False,
    problem: str | None = None,
    conditions: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The Run page's document. `live`: built from a running run's attempts, not from its final record."""
    record = redact(record)
    tries = redact(dict(attempts or {}))
    steps = record.get("steps", [])
    items = record.get("items") or {}
    run_id = str(record["runId"])
    return {
        "id": run_id,
        "name": record.get("name") or run_id,
        "pipeline": record.get("pipeline") or "",
        "phase": record.get("phase") or "",
        "final": record.get("phase") in FINAL_PHASES,
        "live": live,
        "problem": problem,
        "reason": record.get("reason") or "",
        "message": record.get("message") or "",
        "startedAt": record.get("startedAt"),
        "finishedAt": record.get("finishedAt"),
        "seconds": record.get("seconds"),
        "pipelineSpecDigest": record.get("pipelineSpecDigest"),
        "codeVersion": record.get("codeVersion"),
        "parameters": dict(record.get("parameters") or {}),
        "externalInputs": dict(record.get("externalInputs") or {}),
        "environment": {k: v for k, v in (record.get("environment") or {}).items() if isinstance(v, str | None)},
        "steps": [step_view(s, items.get(s["name"], []), tries.get(s["name"], [])) for s in steps],
        "dag": dag_svg(steps, depends_on, f"DAG of {run_id}") if steps else "",
        "timing": gantt_svg(steps) if steps else "",
        "failure": failure(record),
        "conditions": redact([dict(c) for c in conditions]),
        "plots": redact([dict(p) for p in plots]),
    }


def compare_view(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Runs side by side: `conveyor compare`'s rows (parameters, metrics, output digests), differences marked."""
    safe = [redact(r) for r in records]
    rows = comparison(safe)
    return {
        "runs": [
            {
                "id": r["runId"],
                "pipeline": r.get("pipeline") or "",
                "phase": r.get("phase"),
                "startedAt": r.get("startedAt"),
            }
            for r in safe
        ],
        "rows": [{"section": s, "name": n, "values": v, "differs": d} for s, n, v, d in rows],
        "differing": sum(1 for *_, d in rows if d),
    }
