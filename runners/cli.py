"""`kondense`: validate, run and describe CompressionJob manifests.

    kondense validate job.yaml            exit 0, or 2 with one line per problem
    kondense run job.yaml [--output URI]  compress locally and print the trade-off table
    kondense search search.yaml [-p N]    try a CompressionSearch's candidates, keep the best
    kondense compare REPORT...            runs side by side, and their Pareto chart
    kondense schema [--format yaml]       the spec's OpenAPI v3 schema

Inside a runner pod the operator starts `kondense run --job-env KONDENSE_JOB --termination-log
/dev/termination-log`: the manifest comes as JSON in that variable and the outcome is written
to the termination log whatever happens. Other areas add commands with `@app.command()`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from kondense.api.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_REJECTED, BadInput, KondenseError
from kondense.api.manifest import load_manifest_text, parse_job, read_job
from kondense.api.outcome import Outcome, termination_message
from kondense.api.spec import CompressionJob
from kondense.runners.console import comparison_table, err, out, trade_off_table
from kondense.runners.console import progress as console_progress

app = typer.Typer(
    name="kondense",
    help="Compress models (ONNX export, graph optimization, INT8/FP16, pruning, distillation) "
    "and measure what was gained and lost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# --- commands --------------------------------------------------------------------------------


@app.command()
def validate(
    file: Annotated[
        Path, typer.Argument(help="CompressionJob or CompressionSearch manifest (YAML or JSON).")
    ],
) -> None:
    """Check a manifest: exit 0, or 2 with one line per problem naming the field."""
    from kondense.api.search import candidates
    from kondense.api.steps import DeviceClass
    from kondense.runners.search import is_search, read_search

    try:
        if is_search(file):
            search = read_search(file)
            count = len(candidates(search.spec, {DeviceClass.cpu, DeviceClass.gpu}))
            out.print(f"{file}: valid CompressionSearch {search.name!r} ({count} candidates)")
            return
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
    from kondense.runners.deadline import seconds_left
    from kondense.runners.local_run import LocalRun, failure_outcome, run_to_outcome

    try:
        job, base_dir = _job_from(file, job_env)
    except KondenseError as error:
        ran = LocalRun(failure_outcome(error, None), None, error.exit_code)
    else:
        left = seconds_left(job.spec.timeout_seconds)  # a retried pod: what is left of its time
        with console_progress() as progress:
            ran = run_to_outcome(
                job, output, progress, progress.doing, base_dir=base_dir, seconds=left
            )
    outcome, report, code = ran.outcome, ran.report, ran.exit_code
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
def search(
    file: Annotated[Path, typer.Argument(help="CompressionSearch manifest (YAML or JSON).")],
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Output root, overriding spec.output.uri."),
    ] = None,
    processes: Annotated[
        int, typer.Option("--processes", "-p", min=1, help="Candidates run at once (1: in turn).")
    ] = 1,
) -> None:
    """Run a CompressionSearch on this machine: every candidate recipe screened, the promising
    ones fully evaluated; the table, search.json and the Pareto chart; exit 0 when one won."""
    from rich.console import Console

    from kondense.runners.search import read_search, run_search
    from kondense.runners.search_report import advice, cpu_note, search_table, why, write_outputs

    def ended(child: Any) -> None:
        err.print(
            f"{child.candidate.index:02d} {child.candidate.name} {child.round.value}: "
            f"{child.outcome.reason} in {child.seconds:.0f} s",
            markup=False,
        )

    try:
        manifest = read_search(file)
        ran = run_search(
            manifest,
            base_dir=file.resolve().parent,
            output=output,
            processes=processes,
            on_child=ended,
        )
    except BadInput as error:
        for line in str(error).splitlines():
            err.print(f"[red]error[/red] (BadInput): {line}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    # A log or pipe is 80 columns to rich: the table keeps whole names there too.
    wide = out if out.is_terminal else Console(highlight=False, width=160)
    wide.print(search_table(ran))
    if note := cpu_note(ran):
        out.print(f"note: {note}")
    document, chart = write_outputs(ran)
    out.print(f"search.json: {document}" + (f"  chart: {chart}" if chart else ""))
    winner = ran.best
    if winner is None:
        err.print(f"[red]error[/red] (NoCandidateAccepted): {advice(ran)}", highlight=False)
        raise typer.Exit(EXIT_REJECTED)
    out.print(f"[green]best[/green]: {ran.candidates[winner.candidate].recipe}: {why(ran, winner)}")


@app.command()
def plan(
    file: Annotated[Path, typer.Argument(help="CompressionJob manifest (YAML or JSON).")],
) -> None:
    """Print what `kondense run` would do: the steps as they will run, each automatic choice
    (an inserted export, optimize's level and fusion before quantization) with its reason."""
    from kondense.runners.plan import describe, make_plan, planned_format, resolve_uris

    try:
        job = read_job(file)
        spec = resolve_uris(job.spec, file.resolve().parent)
        model_format, how = planned_format(spec)
    except BadInput as error:
        for line in str(error).splitlines():
            err.print(f"{file}: {line}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    out.print(f"{file}: {job.name!r}, model {spec.model.uri} ({model_format.value}, {how})")
    for line in describe(make_plan(spec, model_format)):
        out.print(line, markup=False, highlight=False)


@app.command()
def compare(
    reports: Annotated[
        list[Path], typer.Argument(help="report.json files, or the output folders holding them.")
    ],
    chart: Annotated[
        Path, typer.Option(help="Where the Pareto chart goes (PNG; an HTML page beside it).")
    ] = Path("kondense-compare.png"),
) -> None:
    """Compare runs: a table of size, latency and metric, and their Pareto chart."""
    from kondense.runners.compare import read_report, trade_off_points, write_comparison

    try:
        named = [read_report(path) for path in reports]
        points = trade_off_points(named)
        png, page = write_comparison(points, chart, "kondense compare")
    except BadInput as error:
        err.print(f"[red]error[/red] (BadInput): {error}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from error
    out.print(comparison_table(points))
    out.print(f"chart: {png}  page: {page}")


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
    kind: Annotated[
        str, typer.Option("--kind", help="job (CompressionJob) or search (CompressionSearch).")
    ] = "job",
) -> None:
    """Print a CRD generated from the models (crds/compressionjob.yaml, compressionsearch.yaml)."""
    # The operator area owns the CRDs.
    from kondense.api.crd import render_crd
    from kondense.api.search_crd import render_search_crd

    renderers = {"job": render_crd, "search": render_search_crd}
    if kind not in renderers:
        err.print(f"--kind: {kind!r} is not job or search")
        raise typer.Exit(EXIT_BAD_INPUT)
    text = renderers[kind]()
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


def _write_termination_log(path: str, outcome: Outcome) -> None:
    try:
        Path(path).write_text(termination_message(outcome))
    except OSError as error:
        err.print(f"cannot write the termination log {path}: {error}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
