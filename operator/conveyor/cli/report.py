"""`conveyor report RUN`: one self-contained HTML page about a Run, from its record and its artifacts.

The DAG (inline SVG), step timings (a Gantt chart in SVG), validation verdicts and anomalies, every
step's metrics, and the evaluation plots (PNGs from evaluate's `plots` zip, embedded as data URIs).
Artifacts are read through the store, which verifies every digest: a missing or corrupt one is shown
as such on the page, with the steps that depend on it, instead of being skipped quietly.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conveyor.cli.records import _source, _store_errors_exit_1, _value, _where
from conveyor.kube.timestamps import parse_timestamp
from conveyor.storage.store import ArtifactMissing, ArtifactStore, DigestMismatch

EXIT_OK, EXIT_FAILED = 0, 1
BAR_COLOURS = {"Succeeded": "#4c9a4c", "Failed": "#c0392b", "Cancelled": "#888888", "Running": "#3a78c2"}


class Artifacts:
    """Reads a run's artifacts through the store, remembering what could not be read and why."""

    def __init__(self, store: ArtifactStore, record: Mapping[str, Any], work: Path) -> None:
        self.store, self.record, self.work = store, record, work
        self.problems: dict[str, str] = {}

    def read(self, digest: str) -> bytes | None:
        dest = self.work / digest.replace(":", "-")
        if not dest.exists():
            try:
                self.store.get_file(digest, dest)
            except ArtifactMissing:
                self.problems[digest] = "missing"
                return None
            except DigestMismatch as e:
                self.problems[digest] = f"corrupt ({e})"
                return None
        return dest.read_bytes()


def gantt_svg(steps: Sequence[Mapping[str, Any]], width: int = 760) -> str:
    """One bar per step from its start to its finish; cache hits and steps that never ran are marked."""
    spans = [(s, parse_timestamp(s.get("startedAt")), parse_timestamp(s.get("finishedAt"))) for s in steps]
    starts = [a for _, a, _ in spans if a is not None]
    ends = [b for _, _, b in spans if b is not None] + starts
    label_w, row_h, top = 150, 22, 24
    height = top + row_h * len(steps) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">'
    ]
    if not starts:
        out.append('<text x="4" y="16">no step ran (all cache hits or skipped)</text>')
    t0 = min(starts) if starts else None
    total = max((max(ends) - t0).total_seconds(), 1e-3) if t0 else 1.0
    scale = (width - label_w - 70) / total
    out.append(f'<text x="{label_w}" y="14" fill="#555">0 s</text>')
    out.append(f'<text x="{width - 70}" y="14" fill="#555" text-anchor="end">{total:.1f} s</text>')
    for i, (s, a, b) in enumerate(spans):
        y = top + i * row_h
        out.append(f'<text x="4" y="{y + 14}">{html.escape(s["name"])}</text>')
        if s.get("cacheHit"):
            out.append(f'<text x="{label_w}" y="{y + 14}" fill="#4c9a4c">cache hit (no pod ran)</text>')
        elif a is not None and b is not None and t0 is not None:
            x, w = label_w + (a - t0).total_seconds() * scale, max((b - a).total_seconds() * scale, 2.0)
            colour = BAR_COLOURS.get(s.get("phase", ""), "#aaaaaa")
            secs = (b - a).total_seconds()
            out.append(
                f'<rect class="bar" data-step="{html.escape(s["name"])}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" '
                f'height="{row_h - 6}" fill="{colour}"><title>{html.escape(s["name"])}: {secs:.2f} s, '
                f"{s.get('attempts', 0)} attempt(s)</title></rect>"
            )
            out.append(f'<text x="{x + w + 4:.1f}" y="{y + 14}" fill="#333">{secs:.2f} s</text>')
        else:
            out.append(f'<text x="{label_w}" y="{y + 14}" fill="#888">{html.escape(s.get("phase", ""))}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _validation_section(record: Mapping[str, Any], artifacts: Artifacts) -> str:
    from conveyor.components._html import table  # noqa: PLC0415

    parts = []
    for s in record.get("steps", []):
        if s.get("component") != "validate":
            continue
        ref = next((o for o in s.get("outputs", []) if o["name"] == "report"), None)
        if ref is None:
            parts.append(f"<p>{html.escape(s['name'])}: no report ({html.escape(s.get('phase', ''))})</p>")
            continue
        data = artifacts.read(ref["digest"])
        if data is None:
            parts.append(
                f'<p class="bad">{html.escape(s["name"])}: the report {ref["digest"]} is '
                f"{html.escape(artifacts.problems[ref['digest']])}</p>"
            )
            continue
        report = json.loads(data)
        verdict = "passed" if report.get("passed") else f"{len(report.get('anomalies', []))} anomalies"
        parts.append(f"<h3>{html.escape(s['name'])}: {html.escape(verdict)}</h3>")
        parts.append(table(["check", "value"], [("verdict", verdict), ("rows", report.get("rows", "-"))]))
        anomalies = report.get("anomalies") or []
        if anomalies:
            rows = [(a.get("column") or "(dataset)", a.get("check", ""), a.get("message", "")) for a in anomalies]
            parts.append(table(["column", "check", "anomaly"], rows))
    return "\n".join(parts) or "<p>No validation step in this run.</p>"


def _metrics_section(record: Mapping[str, Any]) -> str:
    from conveyor.components._html import table  # noqa: PLC0415

    rows = [(s["name"], k, float(v)) for s in record.get("steps", []) for k, v in sorted(s.get("metrics", {}).items())]
    return table(["step", "metric", "value"], rows) if rows else "<p>No metrics recorded.</p>"


def _plots_section(record: Mapping[str, Any], artifacts: Artifacts) -> str:
    parts = []
    for s in record.get("steps", []):
        ref = next((o for o in s.get("outputs", []) if o["name"] == "plots"), None)
        if ref is None:
            continue
        data = artifacts.read(ref["digest"])
        if data is None:
            parts.append(
                f'<p class="bad">{html.escape(s["name"])}: the plots {ref["digest"]} are '
                f"{html.escape(artifacts.problems[ref['digest']])}</p>"
            )
            continue
        path = artifacts.work / f"{s['name']}-plots.zip"
        path.write_bytes(data)
        with zipfile.ZipFile(path) as archive:
            index = json.loads(archive.read("index.json"))
            for plot in index.get("plots", []):
                png = base64.b64encode(archive.read(plot["file"])).decode()
                title = html.escape(plot.get("title") or plot["file"])
                parts.append(
                    f'<figure><img alt="{title}" src="data:image/png;base64,{png}">'
                    f"<figcaption>{html.escape(s['name'])}: {title}</figcaption></figure>"
                )
            parts.extend(f"<p>{html.escape(str(n))}</p>" for n in index.get("notes", []))
    return "\n".join(parts) or "<p>No plots in this run.</p>"


def render_report(record: Mapping[str, Any], store: ArtifactStore, depends_on: Mapping[str, Sequence[str]]) -> str:
    from conveyor.cli.graph import dag_graph, to_svg  # noqa: PLC0415
    from conveyor.components._html import page, table  # noqa: PLC0415
    from conveyor.lifecycle.integrity import check_record, downstream_of, store_checker  # noqa: PLC0415

    steps = record.get("steps", [])
    name = str(record.get("name") or record["runId"])
    overview = table(
        ["", ""],
        [
            ("run", name),
            ("run id", record["runId"]),
            ("pipeline", record.get("pipeline", "")),
            ("phase", record.get("phase", "")),
            ("pipeline spec", record.get("pipelineSpecDigest", "")),
            ("code version", f"conveyor {record.get('codeVersion', '')}"),
            ("started", record.get("startedAt") or "-"),
            ("duration", f"{record['seconds']:.1f} s" if record.get("seconds") is not None else "-"),
            *((f"parameter {k}", _value(v)) for k, v in sorted(record.get("parameters", {}).items())),
        ],
    )
    with tempfile.TemporaryDirectory(prefix="conveyor-report-") as tmp:
        artifacts = Artifacts(store, record, Path(tmp))
        validation = _validation_section(record, artifacts)
        plots = _plots_section(record, artifacts)
        problems = {p.digest: p.text() for p in check_record(record, store_checker(store, content=False))}
        for digest, what in artifacts.problems.items():
            _, downstream = downstream_of(record, digest)
            problems[digest] = f"{digest} is {what}; depends on it: {', '.join(downstream) or '-'}"
    outputs = [
        (s["name"], o["name"], o["digest"], o.get("size", "-"), problems.get(o["digest"], "ok").split(";")[0])
        for s in steps
        for o in s.get("outputs", [])
    ]
    sections = [
        f"<h2>Run</h2>\n{overview}",
        f'<h2>Pipeline</h2>\n<div class="dag">{to_svg(dag_graph(steps, depends_on), f"DAG of {name}")}</div>',
        f"<h2>Timings</h2>\n{gantt_svg(steps)}",
        f"<h2>Validation</h2>\n{validation}",
        f"<h2>Metrics</h2>\n{_metrics_section(record)}",
        f"<h2>Plots</h2>\n{plots}",
        "<h2>Artifacts</h2>\n" + table(["step", "output", "digest", "bytes", "state"], outputs),
    ]
    if problems:
        items = "".join(f"<li>{html.escape(t)}</li>" for t in problems.values())
        sections.insert(1, f'<h2 class="bad">Bad input</h2>\n<ul class="problems">{items}</ul>')
    return page(f"Run {name}", "\n".join(sections))


def cmd_report(args: argparse.Namespace) -> int:
    from conveyor.lifecycle.specs import load_spec  # noqa: PLC0415

    source = _source(args)
    record = source.record(args.run)
    spec = load_spec(source.store, record["pipelineSpecDigest"]) if record.get("pipelineSpecDigest") else None
    depends_on = {s.name: list(s.depends_on) for s in spec.all_steps()} if spec is not None else {}
    text = render_report(record, source.store, depends_on)
    out: Path = args.output or Path(f"report-{record.get('name') or record['runId']}.html")
    out.write_text(text)
    bad = text.count('<h2 class="bad">') > 0
    print(f"wrote {out}{' (with bad input: see the page)' if bad else ''}", file=sys.stderr)
    return EXIT_FAILED if bad else EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rep = sub.add_parser(
        "report", help="one self-contained HTML page about a run: DAG, timings, validation, metrics, plots"
    )
    rep.add_argument("run")
    rep.add_argument("-o", "--output", type=Path, help="the HTML file (default: report-RUN.html)")
    _where(rep)
    rep.set_defaults(func=_store_errors_exit_1(cmd_report))
