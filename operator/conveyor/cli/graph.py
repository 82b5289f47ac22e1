"""Drawing a DAG: a layered layout (pure), rendered as SVG text or, through matplotlib, as PNG.

Used for `conveyor lineage --graph` (steps, the artifacts between them and the external data they read)
and for the DAG in `conveyor report`. Columns follow the longest path from a source, so every edge points
right; rows keep the order nodes were given in (the pipeline's order).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_W, NODE_H, COL_GAP, ROW_GAP, MARGIN = 190, 46, 70, 18, 16

# fill colour by node state: step phases, artifacts, and problems (missing or corrupt)
FILL = {
    "Succeeded": "#d9f2d9",
    "Failed": "#f8d0d0",
    "Skipped": "#eeeeee",
    "Cancelled": "#eeeeee",
    "Running": "#d6e6fa",
    "Pending": "#ffffff",
    "cached": "#e8f0e0",
    "artifact": "#fff8dc",
    "model": "#ffe08a",
    "external": "#e6e6fa",
    "problem": "#ff9c9c",
}


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    detail: str = ""
    state: str = "Pending"
    shape: str = "box"  # box: a step; note: an artifact or an external input


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def add(self, node: Node) -> None:
        if all(n.id != node.id for n in self.nodes):
            self.nodes.append(node)

    def link(self, source: str, target: str) -> None:
        if (source, target) not in self.edges:
            self.edges.append((source, target))


@dataclass(frozen=True)
class Placed:
    node: Node
    x: float
    y: float


def layout(graph: Graph) -> tuple[dict[str, Placed], float, float]:
    """Positions (top-left corners) and the canvas size: column = longest path from a source."""
    ids = [n.id for n in graph.nodes]
    preds: dict[str, list[str]] = {i: [] for i in ids}
    for a, b in graph.edges:
        if a in preds and b in preds:
            preds[b].append(a)
    column: dict[str, int] = {}

    def col(i: str, seen: frozenset[str] = frozenset()) -> int:
        if i not in column:
            column[i] = 1 + max((col(p, seen | {i}) for p in preds[i] if p not in seen), default=-1)
        return column[i]

    for i in ids:
        col(i)
    rows: dict[int, int] = {}
    placed = {}
    for n in graph.nodes:
        c = column[n.id]
        r = rows.get(c, 0)
        rows[c] = r + 1
        placed[n.id] = Placed(n, MARGIN + c * (NODE_W + COL_GAP), MARGIN + r * (NODE_H + ROW_GAP))
    width = MARGIN * 2 + (max(column.values(), default=0) + 1) * (NODE_W + COL_GAP) - COL_GAP
    height = MARGIN * 2 + max(rows.values(), default=1) * (NODE_H + ROW_GAP) - ROW_GAP
    return placed, float(width), float(height)


def _clip(text: str, chars: int = 28) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def to_svg(graph: Graph, title: str = "") -> str:
    """A standalone SVG document (also fine inline in HTML): no scripts, no external references."""
    placed, width, height = layout(graph)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
        f"<title>{html.escape(title)}</title>" if title else "",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
    ]
    for a, b in graph.edges:
        if a not in placed or b not in placed:
            continue
        s, t = placed[a], placed[b]
        x1, y1 = s.x + NODE_W, s.y + NODE_H / 2
        x2, y2 = t.x, t.y + NODE_H / 2
        mid = (x1 + x2) / 2
        out.append(
            f'<path class="edge" data-from="{html.escape(a)}" data-to="{html.escape(b)}" '
            f'd="M {x1:.1f} {y1:.1f} C {mid:.1f} {y1:.1f}, {mid:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}" '
            'fill="none" stroke="#555" stroke-width="1.2" marker-end="url(#arrow)"/>'
        )
    for p in placed.values():
        n = p.node
        rx = 8 if n.shape == "box" else 2
        dash = ' stroke-dasharray="4 2"' if n.shape == "note" else ""
        stroke = "#c00000" if n.state == "problem" else "#444"
        out.append(
            f'<g class="node" data-id="{html.escape(n.id)}" data-state="{html.escape(n.state)}">'
            f"<title>{html.escape(n.label)}{html.escape(chr(10) + n.detail) if n.detail else ''}</title>"
            f'<rect x="{p.x:.1f}" y="{p.y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="{rx}" '
            f'fill="{FILL.get(n.state, "#ffffff")}" stroke="{stroke}"{dash}/>'
            f'<text x="{p.x + 8:.1f}" y="{p.y + 18:.1f}" font-weight="bold">{html.escape(_clip(n.label))}</text>'
            f'<text x="{p.x + 8:.1f}" y="{p.y + 35:.1f}" fill="#444">{html.escape(_clip(n.detail, 30))}</text>'
            "</g>"
        )
    out.append("</svg>")
    return "\n".join(x for x in out if x) + "\n"


def to_png(graph: Graph, path: Path, title: str = "") -> None:
    """The same drawing through matplotlib's Agg canvas (no display needed)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: PLC0415

    placed, width, height = layout(graph)
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, (height + (24 if title else 0)) / dpi), dpi=dpi)
    try:
        ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + (24 if title else 0))))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.axis("off")
        if title:
            fig.suptitle(title, fontsize=11, y=0.995, va="top")
        for a, b in graph.edges:
            if a in placed and b in placed:
                s, t = placed[a], placed[b]
                ax.add_patch(
                    FancyArrowPatch(
                        (s.x + NODE_W, s.y + NODE_H / 2),
                        (t.x, t.y + NODE_H / 2),
                        arrowstyle="-|>",
                        mutation_scale=10,
                        connectionstyle="arc3,rad=0.0",
                        color="#555555",
                        linewidth=1.0,
                    )
                )
        for p in placed.values():
            n = p.node
            ax.add_patch(
                FancyBboxPatch(
                    (p.x, p.y),
                    NODE_W,
                    NODE_H,
                    boxstyle="round,pad=0,rounding_size=8" if n.shape == "box" else "square,pad=0",
                    facecolor=FILL.get(n.state, "#ffffff"),
                    edgecolor="#c00000" if n.state == "problem" else "#444444",
                    linestyle="--" if n.shape == "note" else "-",
                )
            )
            ax.text(p.x + 8, p.y + 16, _clip(n.label), fontsize=8.5, fontweight="bold", va="center")
            ax.text(p.x + 8, p.y + 33, _clip(n.detail, 30), fontsize=7.5, color="#444444", va="center")
        fig.savefig(path, dpi=dpi, format="png")
    finally:
        plt.close(fig)


def write_graph(graph: Graph, path: Path, title: str = "") -> None:
    """SVG or PNG, by the file's suffix."""
    suffix = path.suffix.lower()
    if suffix == ".svg":
        path.write_text(to_svg(graph, title))
    elif suffix == ".png":
        to_png(graph, path, title)
    else:
        raise ValueError(f"{path.name}: the graph is written as .svg or .png")


# ------------------------------------------------------------------ graphs of a run


def short(digest: str | None) -> str:
    return digest[: len("sha256:") + 12] if digest else "(no digest)"


def lineage_graph(view: Mapping[str, Any], problems: Mapping[str, str] | None = None) -> Graph:
    """Steps, the artifacts they wrote, and the external data they read; `problems` maps digest → what is wrong."""
    problems = problems or {}
    g = Graph()
    for s in view["steps"]:
        for inp in s.get("inputs", []):
            if not inp.get("step"):
                uri = inp.get("uri", "?")
                bad = inp.get("digest") in problems
                g.add(
                    Node(
                        f"ext:{uri}",
                        uri.rsplit("/", 1)[-1] or uri,
                        short(inp.get("digest")),
                        "problem" if bad else "external",
                        "note",
                    )
                )
        state = "cached" if s.get("cacheHit") else s.get("phase", "Pending")
        what = s.get("component") or s.get("image") or ""
        g.add(Node(f"step:{s['name']}", s["name"], f"{what}{' (cache hit)' if s.get('cacheHit') else ''}", state))
        for inp in s.get("inputs", []):
            src = f"out:{inp['step']}.{inp['output']}" if inp.get("step") else f"ext:{inp.get('uri', '?')}"
            g.link(src, f"step:{s['name']}")
        for o in s.get("outputs", []):
            bad = o["digest"] in problems
            state = "problem" if bad else ("model" if o["name"] == "model" else "artifact")
            g.add(Node(f"out:{s['name']}.{o['name']}", o["name"], short(o["digest"]), state, "note"))
            g.link(f"step:{s['name']}", f"out:{s['name']}.{o['name']}")
    # links to outputs of steps listed later (never in a recorded order, but harmless) are dropped by layout
    known = {n.id for n in g.nodes}
    g.edges = [(a, b) for a, b in g.edges if a in known and b in known]
    return g


def dag_graph(steps: Sequence[Mapping[str, Any]], depends_on: Mapping[str, Sequence[str]] | None = None) -> Graph:
    """The steps of a run record and their dependencies (inputs, plus dependsOn when the spec is known)."""
    g = Graph()
    for s in steps:
        state = "cached" if s.get("cacheHit") else s.get("phase", "Pending")
        seconds = s.get("seconds")
        detail = (s.get("component") or s.get("image") or "") + (f"  {seconds:.1f}s" if seconds else "")
        g.add(Node(s["name"], s["name"], detail + ("  cache hit" if s.get("cacheHit") else ""), state))
    names = {s["name"] for s in steps}
    for s in steps:
        ups = [i["step"] for i in s.get("inputs", []) if i.get("step")] + list((depends_on or {}).get(s["name"], []))
        for u in ups:
            if u in names:
                g.link(u, s["name"])
    return g
