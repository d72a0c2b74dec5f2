"""`kondense compare`: several runs side by side from their report.json, and the Pareto chart
of the trade-off (PNG, and an HTML page with the chart and the table) for choosing one.

Each report contributes its compressed model; the first report's baseline is the reference
row. Reports of different base models can be compared, but their metrics are each relative
to their own baseline.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from kondense.api.errors import BadInput
from kondense.api.outcome import Report
from kondense.runners.io.storage import REPORT_NAME
from kondense.runners.pareto import Point, pareto_front, render_chart


def read_report(path: Path) -> tuple[str, Report]:
    """A report.json (or the output folder holding one), named after its folder."""
    file = path / REPORT_NAME if path.is_dir() else path
    if not file.is_file():
        raise BadInput(f"{path}: no {REPORT_NAME} there; give a run's output folder or its report")
    try:
        report = Report.model_validate(json.loads(file.read_text()))
    except (ValueError, ValidationError) as error:
        raise BadInput(f"{file} is not a kondense report: {error}") from error
    if report.results is None:
        raise BadInput(f"{file} has no results to compare (the run measured nothing)")
    return file.resolve().parent.name, report


def trade_off_points(named: Sequence[tuple[str, Report]]) -> list[Point]:
    """The first report's baseline, then each report's compressed model."""
    first = named[0][1].results
    assert first is not None
    points = [Point("baseline", first.baseline.latency_ms_p50, 1.0, first.baseline.bytes / 1e6)]
    for name, report in named:
        results = report.results
        assert results is not None
        metric = 1.0 - results.metric_drop  # relative to its own baseline, which scores 1.0
        points.append(
            Point(name, results.compressed.latency_ms_p50, metric, results.compressed.bytes / 1e6)
        )
    return points


def html_page(points: Sequence[Point], svg: str, title: str) -> str:
    """A self-contained page: the chart inline, then the table, the Pareto front in bold."""
    front = {p.name for p in pareto_front(points)}
    rows = "\n".join(
        f"<tr{' class=front' if p.name in front else ''}><td>{html.escape(p.name)}</td>"
        f"<td>{p.size_mb:.2f}</td><td>{p.latency_ms:.3f}</td><td>{p.metric:.6f}</td></tr>"
        for p in points
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}} td:first-child{{text-align:left}}
tr.front{{font-weight:bold}}</style></head>
<body><h1>{html.escape(title)}</h1>
<figure>{svg}</figure>
<table><thead><tr><th>model</th><th>size MB</th><th>p50 ms</th><th>metric vs baseline</th></tr>
</thead><tbody>
{rows}
</tbody></table>
<p>Bold: the Pareto front (no other model is as fast, as accurate and as small).</p>
</body></html>
"""


def write_comparison(points: Sequence[Point], chart: Path, title: str) -> tuple[Path, Path]:
    """The chart as PNG at `chart`, and the HTML page beside it (same name, .html)."""
    chart.parent.mkdir(parents=True, exist_ok=True)
    chart.write_bytes(render_chart(points, title, "png"))
    svg = render_chart(points, title, "svg").decode()
    page = chart.with_suffix(".html")
    page.write_text(html_page(points, svg[svg.index("<svg") :], title), encoding="utf-8")
    return chart, page
