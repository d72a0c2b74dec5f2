"""Progress of long stages: done/total, percent, elapsed time and an estimate of the time left.

A loop reports every item to the job's Progress callback (`counted` does it for an iterable);
what reaches the log is decided here, once for every loop: a line when a stage starts, then at
most one line per `interval` seconds while it advances, and one when it is done. In a runner
pod those lines are what `kubectl logs` shows; on a terminal the same figures drive a live bar.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from kondense.runners.core import Progress

# Seconds between two log lines of one stage; KONDENSE_PROGRESS_SECONDS overrides it (0 logs
# every item, which a test of a small model needs).
LOG_INTERVAL_SECONDS = 10.0
# No estimate before this share of the work is done: the first items of a stage (a model
# load, a session's first run) say little about the rest.
ETA_MIN_FRACTION = 0.02

T = TypeVar("T")


def log_interval() -> float:
    """LOG_INTERVAL_SECONDS, or KONDENSE_PROGRESS_SECONDS when set to a number >= 0."""
    try:
        value = float(os.environ.get("KONDENSE_PROGRESS_SECONDS", LOG_INTERVAL_SECONDS))
    except ValueError:
        return LOG_INTERVAL_SECONDS
    return value if value >= 0 else LOG_INTERVAL_SECONDS


def eta_seconds(elapsed: float, completed: float, total: float | None) -> float | None:
    """Seconds left at the rate so far (`completed` of `total` in `elapsed` seconds); None when
    the total is unknown or too little is done to tell."""
    if not total or total <= 0 or elapsed < 0:
        return None
    if completed >= total:
        return 0.0
    if completed <= 0 or completed / total < ETA_MIN_FRACTION:
        return None
    return elapsed * (total - completed) / completed


def duration(seconds: float) -> str:
    """`seconds` as m:ss, or h:mm:ss from an hour on."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def figures(completed: float, total: float | None, elapsed: float) -> str:
    """'12/48 (25%), 0:03 elapsed, ETA 0:09': what a progress line says after the stage."""
    if not total:
        return f"{duration(elapsed)} elapsed"
    done = min(completed, total)
    eta = eta_seconds(elapsed, done, total)
    left = "done" if done >= total else f"ETA {duration(eta)}" if eta is not None else "ETA -"
    return f"{done:g}/{total:g} ({done / total:.0%}), {duration(elapsed)} elapsed, {left}"


@dataclass
class StageClock:
    """When each stage (a description) started, and whether a report is worth a log line.

    A new description starts a stage; so does a count going back (the same loop run again).
    `clock` is injectable so the rate limit is testable without sleeping.
    """

    interval: float = field(default_factory=log_interval)
    clock: Callable[[], float] = time.monotonic
    description: str = ""
    started: float = 0.0
    last_line: float = float("-inf")
    completed: float = 0.0
    logged_done: bool = False
    fresh: bool = True  # no report of this stage logged yet but its first

    def update(self, description: str, completed: float, total: float | None) -> bool:
        """Record a report; True when it should become a log line: a stage's first report, its
        last (completed reaches total), and in between one per `interval` seconds."""
        now = self.clock()
        new_stage = description != self.description or completed < self.completed
        self.completed = completed
        done = bool(total) and completed >= (total or 0)
        if new_stage:
            self.description, self.started, self.fresh = description, now, True
        elif self.logged_done or (not done and now - self.last_line < self.interval):
            return False
        else:
            self.fresh = False
        self.last_line, self.logged_done = now, done
        return True

    def elapsed(self) -> float:
        return self.clock() - self.started

    def line(self, completed: float, total: float | None) -> str:
        """The log line for this report: the description (and the count it starts at) when
        the stage starts, then the description with its figures."""
        if self.fresh:
            return self.description + (f" ({completed:g}/{total:g})" if total else "")
        return f"{self.description}: {figures(completed, total, self.elapsed())}"


def counted(
    items: Iterable[T], progress: Progress, description: str, total: int | None
) -> Iterator[T]:
    """`items`, reporting `description` i/total to `progress` before the first and after each."""
    progress(description, 0, total)
    for done, item in enumerate(items, start=1):
        yield item
        progress(description, done, total)
