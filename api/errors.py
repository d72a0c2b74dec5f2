"""Errors a user can act on, and the exit codes the CLI and the runner pod end with."""

from __future__ import annotations

# Exit codes are a contract with the operator's podFailurePolicy: bad input, a rejected result
# and a spent time limit are final (never retried); anything else is treated as transient.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_REJECTED = 3
EXIT_TIMED_OUT = 4
# Storage that did not answer as it should (throttling, a 5xx, a dropped connection, DNS): not
# the input's fault, so the Job retries the pod (up to its backoffLimit).
EXIT_STORAGE_UNAVAILABLE = 5

# The end of the job's time (Unix seconds), set by the operator when it creates the runner
# Job: retried pods share the Job's activeDeadlineSeconds, so each gets what is left of it.
DEADLINE_ENV = "KONDENSE_DEADLINE"

# The pool's download policy, set by the operator on runner pods (runners/io/fetch.py reads
# them): "1" allows plain http:// and private addresses; the cap in bytes; the timeout in s.
ALLOW_HTTP_ENV = "KONDENSE_ALLOW_HTTP"
ALLOW_PRIVATE_ENV = "KONDENSE_ALLOW_PRIVATE_NETWORKS"
MAX_DOWNLOAD_BYTES_ENV = "KONDENSE_MAX_DOWNLOAD_BYTES"
DOWNLOAD_TIMEOUT_ENV = "KONDENSE_DOWNLOAD_TIMEOUT"


class KondenseError(Exception):
    """A failure with a message written for the user: what went wrong and what to change."""

    exit_code = EXIT_FAILURE
    reason = "RunnerFailed"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.field}: {message}" if self.field else message


class BadInput(KondenseError):
    """The job's input (spec, model file, data) is wrong; retrying cannot help."""

    exit_code = EXIT_BAD_INPUT
    reason = "BadInput"


class StorageUnavailable(KondenseError):
    """Storage failed for a reason of its own (throttling, 5xx, connection, DNS); retried."""

    exit_code = EXIT_STORAGE_UNAVAILABLE
    reason = "StorageUnavailable"


class ResultRejected(KondenseError):
    """The compressed model missed its quality or speed gate; the artifact is kept, marked."""

    exit_code = EXIT_REJECTED
    reason = "ResultRejected"


class DeadlineExceeded(BaseException):
    """spec.timeoutSeconds is spent. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way up turns it into a different failure."""

    exit_code = EXIT_TIMED_OUT
    reason = "DeadlineExceeded"
