"""The trade-off chart of `kondense compare` and `make bench-quality`: accuracy against
latency against size.

Each recipe is a point at (p50 latency, metric), its area proportional to the model's size.
A recipe is on the Pareto front when no other is at least as good on all three (faster or
as fast, as accurate or more, as small or smaller) and better on one; the front is drawn and
labelled, the rest are grey. Drawn with matplotlib's Agg backend (no display needed), as PNG
or SVG; matplotlib is imported only here, and asked for by name when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kondense.api.errors import BadInput


@dataclass(frozen=True)
class Point:
    name: str
    latency_ms: float
    metric: float  # higher is better (cosine, agreement, accuracy)
    size_mb: float
    group: str = ""  # which model the recipe belongs to; one panel per group


def dominates(a: Point, b: Point) -> bool:
    """a is no worse than b on latency, metric and size, and better on at least one."""
    no_worse = a.latency_ms <= b.latency_ms and a.metric >= b.metric and a.size_mb <= b.size_mb
    better = a.latency_ms < b.latency_ms or a.metric > b.metric or a.size_mb < b.size_mb
    return no_worse and better


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates, fastest first."""
    front = [p for p in points if not any(dominates(q, p) for q in points if q is not p)]
    return sorted(front, key=lambda p: p.latency_ms)


def write_chart(points: Sequence[Point], path: Path, title: str) -> Path:
    """The chart as PNG (or SVG, by `path`'s suffix) at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_chart(points, title, "svg" if path.suffix == ".svg" else "png"))
    return path


def render_chart(points: Sequence[Point], title: str, image_format: str = "png") -> bytes:
    """One panel per group of points, the Pareto front of each highlighted."""
    import io

    try:
        import matplotlib
    except ImportError as error:
        raise BadInput(
            "drawing the trade-off chart needs matplotlib: pip install matplotlib"
        ) from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({p.group for p in points}, key=[p.group for p in points].index)
    figure, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 5), squeeze=False)
    for axis, group in zip(axes[0], groups, strict=True):
        members = [p for p in points if p.group == group]
        front = pareto_front(members)
        largest = max(p.size_mb for p in members) or 1.0
        for point in members:
            on_front = point in front
            area = 60 + 900 * point.size_mb / largest  # points^2: the marker is sqrt(area) wide
            axis.scatter(
                point.latency_ms,
                point.metric,
                s=area,
                color="tab:blue" if on_front else "lightgrey",
                edgecolor="black" if on_front else "grey",
                alpha=0.8,
                zorder=3 if on_front else 2,
            )
            axis.annotate(
                f"{point.name}\n{point.size_mb:.1f} MB",
                (point.latency_ms, point.metric),
                textcoords="offset points",
                # Up and right of the marker's edge, whatever its size: never over it.
                xytext=(0.36 * area**0.5 + 4, 0.36 * area**0.5 + 2),
                fontsize=7,
                color="black" if on_front else "grey",
            )
        axis.plot([p.latency_ms for p in front], [p.metric for p in front], "--", color="tab:blue")
        if group:
            axis.set_title(group, fontsize=10)
        axis.set_xlabel("p50 latency per batch, ms")
        axis.set_ylabel("metric, baseline = 1 (higher is better)")
        # Room for the largest marker and the labels up and right of the markers.
        axis.margins(x=0.2, y=0.2)
        axis.grid(True, alpha=0.3)
    figure.suptitle(f"{title}\nblue: Pareto front (latency, metric, size); area: model size")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=120)
    plt.close(figure)
    return buffer.getvalue()
