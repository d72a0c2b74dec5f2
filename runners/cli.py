"""`kondense`: validate, run and describe CompressionJob manifests.

    kondense validate job.yaml            exit 0, or 2 with one line per problem
    kondense run job.yaml [--output URI]  compress locally and print the trade-off table
    kondense schema [--format yaml]       the spec's OpenAPI v3 schema

Inside a runner pod the operator starts `kondense run --job-env KONDENSE_JOB --termination-log
/dev/termination-log`: the manifest comes as JSON in that variable and the outcome is written
to the termination log whatever happens. Other areas add commands with `@app.command()`.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from kondense.api.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    BadInput,
    DeadlineExceeded,
    KondenseError,
)
from kondense.api.manifest import load_manifest_text, parse_job, read_job
from kondense.api.outcome import Outcome, Report, Results, termination_message
from kondense.api.spec import CompressionJob

app = typer.Typer(
    name="kondense",
    help="Compress models (ONNX export, graph optimization, INT8/FP16, pruning, distillation) "
    "and measure what was gained and lost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


# --- commands --------------------------------------------------------------------------------


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="CompressionJob manifest (YAML or JSON).")],
) -> None:
    """Check a manifest: exit 0, or 2 with one line per problem naming the field."""
    try:
        job = read_job(file)
    except BadInput as error:
        for line in str(error).splitlines():
            err.print(line if line.startswith(str(file)) else f"{file}: {line}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    out.print(f"{file}: valid CompressionJob {job.name!r} ({len(job.spec.steps)} steps)")


@app.command()
def run(
    file: Annotated[
        Path | None, typer.Argument(help="CompressionJob manifest; omit with --job-env.")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Output location, overriding spec.output.uri."),
    ] = None,
    job_env: Annotated[
        str | None,
        typer.Option(help="Read the manifest as JSON from this environment variable."),
    ] = None,
    termination_log: Annotated[
        str | None,
        typer.Option(
            help="Write the outcome JSON here on exit (runner pods: /dev/termination-log)."
        ),
    ] = None,
) -> None:
    """Run a CompressionJob on this machine and print the trade-off table."""
    from kondense.runners.deadline import deadline
    from kondense.runners.engine import Rejected, run_job

    outcome: Outcome
    code = EXIT_OK
    report: Report | None = None
    try:
        job, base_dir = _job_from(file, job_env)
        with _progress() as progress, deadline(job.spec.timeout_seconds, progress.doing):
            report = run_job(job, output, progress, base_dir=base_dir)
        outcome = Outcome(
            succeeded=True,
            reason="Succeeded",
            message=_summary(report.results),
            results=report.results,
            artifacts=report.artifacts,
        )
    except Rejected as error:
        report, code = error.report, error.exit_code
        outcome = _failure(error, report)
    except (KondenseError, DeadlineExceeded) as error:
        code = error.exit_code
        outcome = _failure(error, None)
    except Exception as error:  # anything unforeseen is reported, then ends exit 1
        traceback.print_exc(file=sys.stderr)  # not the user's mistake: keep what a fix needs
        code = EXIT_FAILURE
        outcome = Outcome(
            succeeded=False, reason="RunnerFailed", message=f"{type(error).__name__}: {error}"
        )
    if report is not None and report.results is not None:
        out.print(trade_off_table(report.results))
    if code == EXIT_OK:
        out.print(f"[green]accepted[/green]: {outcome.message}")
    else:
        for line in outcome.message.splitlines():
            err.print(f"[red]error[/red] ({outcome.reason}): {line}", highlight=False)
    if termination_log is not None:
        _write_termination_log(termination_log, outcome)
    if code != EXIT_OK:
        raise typer.Exit(code)


@app.command()
def schema(
    format: Annotated[str, typer.Option("--format", "-f", help="json or yaml.")] = "json",
) -> None:
    """Print the CompressionJob spec's OpenAPI v3 schema (as in the CRD)."""
    document = openapi_schema()
    if format == "yaml":
        typer.echo(yaml.safe_dump(document, sort_keys=False), nl=False)
    elif format == "json":
        typer.echo(json.dumps(document, indent=2))
    else:
        err.print(f"--format: {format!r} is not json or yaml")
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def crd(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Print the CompressionJob CRD generated from the spec (crds/compressionjob.yaml)."""
    from kondense.api.crd import render_crd  # the operator area owns the CRD

    text = render_crd()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def openapi_schema() -> dict[str, Any]:
    """The spec's structural OpenAPI v3 schema: the very one the CRD carries (CEL rules too)."""
    from kondense.api.crd import spec_schema

    return spec_schema()


# --- run helpers -----------------------------------------------------------------------------


def _job_from(file: Path | None, job_env: str | None) -> tuple[CompressionJob, Path | None]:
    """The job and the folder its relative paths resolve against."""
    if job_env is not None:
        text = os.environ.get(job_env)
        if not text:
            raise BadInput(f"--job-env {job_env}: the environment variable is not set or empty")
        return parse_job(load_manifest_text(text, f"${job_env}"), f"${job_env}"), Path.cwd()
    if file is None:
        raise BadInput("give a manifest file, or --job-env VARIABLE")
    return read_job(file), file.resolve().parent


def _failure(error: KondenseError | DeadlineExceeded, report: Report | None) -> Outcome:
    return Outcome(
        succeeded=False,
        reason=error.reason,
        message=str(error),
        results=report.results if report else None,
        artifacts=report.artifacts if report else [],
    )


def _write_termination_log(path: str, outcome: Outcome) -> None:
    try:
        Path(path).write_text(termination_message(outcome))
    except OSError as error:
        err.print(f"cannot write the termination log {path}: {error}")


def _summary(results: Results | None) -> str:
    if results is None:
        return "done"
    speed = _faster(results.baseline.latency_ms_p50, results.compressed.latency_ms_p50)
    return (
        f"{_smaller(results.baseline.bytes, results.compressed.bytes)}, {speed}, "
        f"{results.metric_name} drop {results.metric_drop:.6f}"
    )


class _Progress:
    """Progress for long steps: a rich spinner on a terminal, plain log lines otherwise."""

    def __init__(self) -> None:
        self._live: Any = None
        self._task: Any = None
        self._last = ""

    def __enter__(self) -> _Progress:
        if err.is_terminal:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TimeElapsedColumn

            self._live = Progress(
                SpinnerColumn(),
                "{task.description}",
                BarColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            self._live.start()
            self._task = self._live.add_task("starting", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def __call__(self, description: str, completed: float, total: float | None) -> None:
        if self._live is not None:
            self._live.update(self._task, description=description, completed=completed, total=total)
        elif description != self._last:
            done = f" ({completed:g}/{total:g})" if total else ""
            print(f"kondense: {description}{done}", file=sys.stderr, flush=True)
        self._last = description

    def doing(self) -> str:
        """What the job is doing now, for messages: 'quantize', 'measure baseline'."""
        return self._last or "starting"


def _progress() -> _Progress:
    return _Progress()


def _smaller(before: float, after: float) -> str:
    if before <= 0 or after <= 0:
        return ""
    if before == after:
        return "same"
    return f"{before / after:.2f}x smaller" if after <= before else f"{after / before:.2f}x larger"


def _faster(before_ms: float, after_ms: float) -> str:
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
    table.add_row("size", _mb(base.bytes), _mb(comp.bytes), _smaller(base.bytes, comp.bytes))
    if base.parameters is not None and comp.parameters is not None:
        table.add_row(
            "parameters",
            f"{base.parameters:,}",
            f"{comp.parameters:,}",
            _smaller(base.parameters, comp.parameters),
        )
    for label, before, after in (
        ("latency p50", base.latency_ms_p50, comp.latency_ms_p50),
        ("latency p95", base.latency_ms_p95, comp.latency_ms_p95),
    ):
        table.add_row(label, _ms(before), _ms(after), _faster(before, after))
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
            _smaller(base.compressed_bytes, comp.compressed_bytes),
        )
    if not results.accepted:
        table.caption = f"REJECTED: {results.verdict}"
    elif results.verdict:
        table.caption = results.verdict
    return table


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value >= 1 else f"{value:.4f} ms"


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 10_000 else f"{size:,} B"


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
