"""`kondense compare` and its Pareto chart: which runs no other beats, drawn for a person."""

from __future__ import annotations

import json
from pathlib import Path

from runner.manifests import run_per_channel_and_per_tensor
from typer.testing import CliRunner

from kondense.runners.cli import app
from kondense.runners.pareto import Point, dominates, pareto_front, write_chart

runner = CliRunner()


def test_the_front_keeps_recipes_no_other_beats_on_latency_metric_and_size() -> None:
    fp32 = Point("fp32", 16.0, 1.0, 90.0)
    int8 = Point("int8", 8.0, 0.992, 23.0)
    worse_int8 = Point("plain int8", 9.0, 0.95, 23.0)  # slower and less accurate than int8
    tiny = Point("distilled int8", 4.0, 0.96, 12.0)
    front = pareto_front([fp32, int8, worse_int8, tiny])
    assert [p.name for p in front] == ["distilled int8", "int8", "fp32"]
    assert dominates(int8, worse_int8) and not dominates(int8, fp32)


def test_the_chart_is_a_png_with_a_panel_per_model(tmp_path: Path) -> None:
    points = [
        Point("fp32", 16.0, 1.0, 90.0, "MiniLM"),
        Point("int8", 8.0, 0.99, 23.0, "MiniLM"),
        Point("fp32", 3.0, 1.0, 2.0, "MobileNet"),
        Point("auto", 2.0, 0.995, 0.6, "MobileNet"),
    ]
    chart = write_chart(points, tmp_path / "chart.png", "test")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000


def test_compare_reads_runs_prints_the_table_and_writes_png_and_html(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    outputs = run_per_channel_and_per_tensor(tiny_onnx, tmp_path)
    chart = tmp_path / "charts" / "cmp.png"
    result = runner.invoke(
        app, ["compare", str(outputs[0]), str(outputs[1] / "report.json"), "--chart", str(chart)]
    )
    assert result.exit_code == 0, result.output
    assert "baseline" in result.output and "per-channel" in result.output
    assert "per-tensor" in result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = chart.with_suffix(".html").read_text()
    assert page.count("<svg") == 1 and "<td>per-tensor</td>" in page


def test_compare_names_a_folder_without_a_report(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text(json.dumps({"artifacts": "no"}))
    missing = runner.invoke(app, ["compare", str(tmp_path / "nothing-here")])
    assert missing.exit_code == 2 and "no report.json there" in missing.output
    broken = runner.invoke(app, ["compare", str(tmp_path / "broken")])
    assert broken.exit_code == 2 and "is not a kondense report" in broken.output
