"""Self-contained HTML report pages (no scripts, no external references), shared by the components."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.75rem; text-align: left; }}
td.number {{ text-align: right; font-variant-numeric: tabular-nums; }}
figure {{ margin: 0 0 2rem 0; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>{title}</h1>
{sections}
</body>
</html>
"""


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f'<td class="number">{value:.6g}</td>'
        if isinstance(value, int):
            return f'<td class="number">{value}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def page(title: str, sections: str) -> str:
    return PAGE.format(title=html.escape(title), sections=sections)
