"""One CompressionJob run on this machine to its Outcome, whatever happens: what `kondense run`
prints and writes to the termination log, and what `kondense search` records per candidate.

A failing job (wrong input, a rejected result, the deadline) is an outcome with a reason and
an exit code, not an exception: a search goes on with its other candidates.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kondense.api.errors import EXIT_FAILURE, EXIT_OK, DeadlineExceeded, KondenseError
from kondense.api.outcome import Outcome, Report
from kondense.api.spec import CompressionJob
from kondense.runners.console import summary
from kondense.runners.core import Progress


@dataclass(frozen=True)
class LocalRun:
    outcome: Outcome
    report: Report | None  # published, accepted or not; None when the run stopped before
    exit_code: int


def run_to_outcome(
    job: CompressionJob,
    output: str | None,
    progress: Progress,
    doing: Callable[[], str],
    *,
    base_dir: Path | None,
    seconds: float | None = None,
) -> LocalRun:
    """Run `job` under its deadline (`seconds`, else spec.timeoutSeconds), publishing to
    `output` (else spec.output.uri). `doing()` says what the run is doing, for the deadline's
    message. Unforeseen errors are printed with their traceback and end as RunnerFailed."""
    from kondense.runners.deadline import deadline
    from kondense.runners.engine import Rejected, run_job

    timeout = job.spec.timeout_seconds
    try:
        with deadline(seconds or timeout, doing, limit=timeout):
            report = run_job(job, output, progress, base_dir=base_dir)
    except Rejected as error:
        return LocalRun(failure_outcome(error, error.report), error.report, error.exit_code)
    except (KondenseError, DeadlineExceeded) as error:
        return LocalRun(failure_outcome(error, None), None, error.exit_code)
    except Exception as error:  # anything unforeseen is reported, then ends exit 1
        traceback.print_exc(file=sys.stderr)  # not the user's mistake: keep what a fix needs
        outcome = Outcome(
            succeeded=False, reason="RunnerFailed", message=f"{type(error).__name__}: {error}"
        )
        return LocalRun(outcome, None, EXIT_FAILURE)
    outcome = Outcome(
        succeeded=True,
        reason="Succeeded",
        message=summary(report.results),
        results=report.results,
        artifacts=report.artifacts,
    )
    return LocalRun(outcome, report, EXIT_OK)


def failure_outcome(error: KondenseError | DeadlineExceeded, report: Report | None) -> Outcome:
    return Outcome(
        succeeded=False,
        reason=error.reason,
        message=str(error),
        results=report.results if report else None,
        artifacts=report.artifacts if report else [],
    )
