"""`kondense compare`'s PNG and HTML as a person sees them: opened in a real headless browser
(Debian's Chromium, installed by scripts/debian-packages.sh when missing), screenshotted, and
the screenshots read back: the chart is drawn, the Pareto front is highlighted, the table is
there."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from runner.manifests import run_per_channel_and_per_tensor
from typer.testing import CliRunner

from kondense.runners.cli import app

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# matplotlib's tab:blue, the front's colour, as 0-1 RGB; its markers are drawn at alpha 0.8
# over white.
FRONT_BLUE = np.array([31, 119, 180]) / 255
FRONT_MARKER = 0.8 * FRONT_BLUE + 0.2


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        subprocess.run([str(REPO / "scripts" / "debian-packages.sh"), "chromium"], check=True)
    return CHROMIUM


def browse(chromium: Path, page: Path, *args: str) -> str:
    """Chromium, headless, on `page`; its stdout."""
    done = subprocess.run(
        [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


def screenshot(chromium: Path, page: Path, out: Path, size: str) -> np.ndarray:
    browse(chromium, page, f"--screenshot={out}", f"--window-size={size}")
    import matplotlib.image

    return np.asarray(matplotlib.image.imread(out))[..., :3]


def front_pixels(image: np.ndarray) -> int:
    """Pixels of a Pareto-front marker's fill (the markers of other runs are grey)."""
    return int((np.abs(image - FRONT_MARKER).max(axis=-1) < 0.06).sum())


def test_compare_png_and_html_render_in_a_browser(
    chromium: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    outputs = [str(p) for p in run_per_channel_and_per_tensor(tiny_onnx, tmp_path)]
    chart = tmp_path / "cmp.png"
    result = CliRunner().invoke(app, ["compare", *outputs, "--chart", str(chart)])
    assert result.exit_code == 0, result.output

    # The PNG, as the browser decodes it: a chart, not a blank or broken image.
    png = screenshot(chromium, chart, tmp_path / "png-shot.png", "900,700")
    assert front_pixels(png) > 200, "no Pareto-front marker visible in the PNG"

    # The HTML page: the inline SVG chart renders, the table lists every model.
    page = chart.with_suffix(".html")
    shot = screenshot(chromium, page, tmp_path / "html-shot.png", "1000,1100")
    assert front_pixels(shot[:600]) > 200, "no Pareto-front marker in the page's chart"
    dom = browse(chromium, page, "--dump-dom")
    assert "<svg" in dom and dom.count("<tr") == 4  # the header, baseline and both runs
    assert "<td>per-tensor</td>" in dom and "<td>per-channel</td>" in dom
