"""The job's wall-clock limit, spec.timeoutSeconds, kept by the runner itself.

The runner stops with reason DeadlineExceeded and says what it was doing, locally and in a
pod alike; in a cluster the Job's activeDeadlineSeconds, a little later, is the backstop.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType

from kondense.api.errors import DEADLINE_ENV, DeadlineExceeded


def seconds_left(
    timeout_seconds: float, environ: Mapping[str, str] = os.environ, now: float | None = None
) -> float:
    """What is left of the job's time: timeoutSeconds, or less when the operator's absolute
    deadline (DEADLINE_ENV) is nearer, as for a retried pod. Never zero (a zero timer is off)."""
    text = environ.get(DEADLINE_ENV)
    if not text:
        return timeout_seconds
    left = float(text) - (time.time() if now is None else now)
    return max(0.001, min(timeout_seconds, left))


@contextmanager
def deadline(
    seconds: float, doing: Callable[[], str], every: float = 5.0, limit: float | None = None
) -> Iterator[None]:
    """Raise DeadlineExceeded in the main thread once `seconds` have passed, and again every
    `every` seconds after that should something catch it. A call into native code (an ONNX
    Runtime session, a torch kernel) is interrupted when it returns to Python. `limit` is
    the timeoutSeconds the message names, when `seconds` is only what is left of it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; the caller's own limit applies
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise DeadlineExceeded(
            f"spec.timeoutSeconds: the job ran past its limit of {limit or seconds:g} s while "
            f"{doing()}; raise timeoutSeconds, or shorten the recipe (fewer calibration or "
            "evaluation samples, fewer evaluation.runs, a smaller maxTrainSeconds)"
        )

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, every)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
