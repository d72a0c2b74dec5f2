"""What `kondense` shows a person: progress on stderr and the trade-off table."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console

from kondense.api.outcome import Results
from kondense.runners.progress import StageClock, figures

if TYPE_CHECKING:
    from kondense.runners.pareto import Point

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def summary(results: Results | None) -> str:
    if results is None:
        return "done"
    speed = faster(results.baseline.latency_ms_p50, results.compressed.latency_ms_p50)
    return (
        f"{smaller(results.baseline.bytes, results.compressed.bytes)}, {speed}, "
        f"{results.metric_name} drop {results.metric_drop:.6f} on {results.measured_on()}"
    )


class ConsoleProgress:
    """Progress for long steps: a rich bar with an estimate on a terminal; plain log lines at a
    bounded rate otherwise (a pod's log), as runners/progress.py decides."""

    def __init__(self, *, interval: float | None = None) -> None:
        self._live: Any = None
        self._task: Any = None
        self._stage = StageClock() if interval is None else StageClock(interval=interval)

    def __enter__(self) -> ConsoleProgress:
        if err.is_terminal:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

            self._live = Progress(
                SpinnerColumn(),
                "{task.description}",
                BarColumn(),
                TextColumn("{task.fields[figures]}"),
                console=err,
                transient=True,
            )
            self._live.start()
            self._task = self._live.add_task("starting", total=None, figures="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def __call__(self, description: str, completed: float, total: float | None) -> None:
        log_line = self._stage.update(description, completed, total)
        if self._live is not None:
            self._live.update(
                self._task,
                description=description,
                completed=completed,
                total=total,
                figures=figures(completed, total, self._stage.elapsed()),
            )
        elif log_line:
            print(f"kondense: {self._stage.line(completed, total)}", file=sys.stderr, flush=True)

    def doing(self) -> str:
        """What the job is doing now, for messages: 'quantize', 'measure baseline'."""
        return self._stage.description or "starting"


def progress() -> ConsoleProgress:
    return ConsoleProgress()


def smaller(before: float, after: float) -> str:
    if before <= 0 or after <= 0:
        return ""
    if before == after:
        return "same"
    return f"{before / after:.2f}x smaller" if after <= before else f"{after / before:.2f}x larger"


def faster(before_ms: float, after_ms: float) -> str:
    if before_ms <= 0 or after_ms <= 0:
        return ""
    factor = before_ms / after_ms
    return f"{factor:.2f}x faster" if factor >= 1 else f"{1 / factor:.2f}x slower"


def trade_off_table(results: Results) -> Any:
    """baseline | compressed | change, for size, params, latency, throughput and the metric."""
    from rich.table import Table

    base, comp = results.baseline, results.compressed
    title = f"{results.device}, {results.threads} threads, batch {results.batch_size}" + (
        f", sequence {results.sequence_length}" if results.sequence_length else ""
    )
    table = Table(title=f"kondense trade-off ({title})", title_justify="left")
    table.add_column("")
    table.add_column("baseline", justify="right")
    table.add_column("compressed", justify="right")
    table.add_column("change", justify="right")
    table.add_row("size", _mb(base.bytes), _mb(comp.bytes), smaller(base.bytes, comp.bytes))
    if base.parameters is not None and comp.parameters is not None:
        table.add_row(
            "parameters",
            f"{base.parameters:,}",
            f"{comp.parameters:,}",
            smaller(base.parameters, comp.parameters),
        )
    for label, before, after in (
        ("latency p50", base.latency_ms_p50, comp.latency_ms_p50),
        ("latency p95", base.latency_ms_p95, comp.latency_ms_p95),
    ):
        table.add_row(label, _ms(before), _ms(after), faster(before, after))
    change = comp.throughput / base.throughput if base.throughput > 0 else 0.0
    table.add_row(
        "throughput", f"{base.throughput:.1f}/s", f"{comp.throughput:.1f}/s", f"{change:.2f}x"
    )
    table.add_row(
        results.metric_name,
        f"{base.metric:.6f}" if base.metric is not None else "-",
        f"{comp.metric:.6f}" if comp.metric is not None else "-",
        f"{0.0 - results.metric_drop + 0.0:+.6f}",
    )
    if base.sparsity is not None and comp.sparsity is not None and comp.sparsity > 0.01:
        table.add_row("sparsity", f"{base.sparsity:.1%}", f"{comp.sparsity:.1%}", "")
    if base.compressed_bytes is not None and comp.compressed_bytes is not None:
        table.add_row(
            "size, gzipped",
            _mb(base.compressed_bytes),
            _mb(comp.compressed_bytes),
            smaller(base.compressed_bytes, comp.compressed_bytes),
        )
    if not results.accepted:
        table.caption = f"REJECTED: {results.verdict}"
    elif results.verdict:
        table.caption = results.verdict
    return table


def comparison_table(points: Sequence[Point]) -> Any:
    """One row per model for `kondense compare`, the Pareto front marked."""
    from rich.table import Table

    from kondense.runners.pareto import pareto_front

    front = {p.name for p in pareto_front(points)}
    table = Table(title="kondense compare (* on the Pareto front)", title_justify="left")
    for column in ("model", "size", "latency p50", "metric vs baseline"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for point in points:
        mark = "* " if point.name in front else "  "
        table.add_row(
            mark + point.name,
            _mb(int(point.size_mb * 1e6)),
            _ms(point.latency_ms),
            f"{point.metric:.6f}",
        )
    return table


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value >= 1 else f"{value:.4f} ms"


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 10_000 else f"{size:,} B"
