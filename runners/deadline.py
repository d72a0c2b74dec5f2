"""The job's wall-clock limit, spec.timeoutSeconds, kept by the runner itself.

The runner stops with reason DeadlineExceeded and says what it was doing, locally and in a
pod alike; in a cluster the Job's activeDeadlineSeconds, a little later, is the backstop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from kondense.api.errors import DeadlineExceeded


@contextmanager
def deadline(seconds: float, doing: Callable[[], str], every: float = 5.0) -> Iterator[None]:
    """Raise DeadlineExceeded in the main thread once `seconds` have passed, and again every
    `every` seconds after that should something catch it. A call into native code (an ONNX
    Runtime session, a torch kernel) is interrupted when it returns to Python."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; the caller's own limit applies
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise DeadlineExceeded(
            f"spec.timeoutSeconds: the job ran past its limit of {seconds:g} s while "
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
