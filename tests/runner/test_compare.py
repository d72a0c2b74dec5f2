"""The trade-off chart of make bench-quality: its Pareto front and the PNG it writes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).parents[2] / "bench"


def _pareto() -> ModuleType:
    # bench/ is not a package on the test path (the repository root never is: it holds a
    # folder named operator/), so the module is loaded from its file.
    spec = importlib.util.spec_from_file_location("bench_pareto", BENCH / "pareto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_front_keeps_recipes_no_other_beats_on_latency_metric_and_size() -> None:
    pareto = _pareto()
    point = pareto.Point
    fp32 = point("fp32", 16.0, 1.0, 90.0)
    int8 = point("int8", 8.0, 0.992, 23.0)
    worse_int8 = point("plain int8", 9.0, 0.95, 23.0)  # slower and less accurate than int8
    tiny = point("distilled int8", 4.0, 0.96, 12.0)
    front = pareto.pareto_front([fp32, int8, worse_int8, tiny])
    assert [p.name for p in front] == ["distilled int8", "int8", "fp32"]
    assert pareto.dominates(int8, worse_int8) and not pareto.dominates(int8, fp32)


def test_the_chart_is_a_png_with_a_panel_per_model(tmp_path: Path) -> None:
    pareto = _pareto()
    points = [
        pareto.Point("fp32", 16.0, 1.0, 90.0, "MiniLM"),
        pareto.Point("int8", 8.0, 0.99, 23.0, "MiniLM"),
        pareto.Point("fp32", 3.0, 1.0, 2.0, "MobileNet"),
        pareto.Point("auto", 2.0, 0.995, 0.6, "MobileNet"),
    ]
    chart = pareto.write_chart(points, tmp_path / "chart.png", "test")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000
