"""Prometheus metrics of the operator, served on :8080/metrics.

kondense_build_info{version,python}                    1, labelled with what is running
kondense_compressionjobs{phase,recipe,pool}            jobs the operator knows, by phase
kondense_compressionjobs_finished_total{phase,reason,pool}   jobs seen reaching an end
kondense_compressionjob_stalled{namespace,name,reason,pool}  1 while a job is Stalled, unfinished
kondense_compressionjob_duration_seconds{phase,recipe,pool}  start -> completion of those
kondense_compressionjob_size_ratio{namespace,name,recipe,pool}   of finished jobs (also
kondense_compressionjob_speedup / _metric_drop)
kondense_reconcile_errors_total{kind}                  reconciles that raised, by error type
kondense_search_candidates_total{outcome}              candidates of finished CompressionSearches:
                                                       accepted, rejected or failed
kondense_search_duration_seconds{phase}                start -> completion of those searches
"""

from __future__ import annotations

import contextlib
import platform
import threading
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from kondense.operator.status import TERMINAL

REGISTRY = CollectorRegistry()

BUILD = Info("kondense_build", "The kondense operator that is running.", registry=REGISTRY)

JOBS = Gauge(
    "kondense_compressionjobs",
    "CompressionJobs the operator knows, by phase, recipe and pool.",
    ["phase", "recipe", "pool"],
    registry=REGISTRY,
)
FINISHED = Counter(
    "kondense_compressionjobs_finished",
    "CompressionJobs this operator saw reach Succeeded or Failed, by phase, reason and pool.",
    ["phase", "reason", "pool"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "kondense_compressionjob_duration_seconds",
    "Seconds from runner start to completion of finished CompressionJobs, by recipe.",
    ["phase", "recipe", "pool"],
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200),
    registry=REGISTRY,
)
STALLED = Gauge(
    "kondense_compressionjob_stalled",
    "1 while an unfinished CompressionJob's Stalled condition is True, by its reason.",
    ["namespace", "name", "reason", "pool"],
    registry=REGISTRY,
)
_RESULT_LABELS = ["namespace", "name", "recipe", "pool"]
SIZE_RATIO = Gauge(
    "kondense_compressionjob_size_ratio",
    "Baseline size / compressed size of a finished CompressionJob.",
    _RESULT_LABELS,
    registry=REGISTRY,
)
SPEEDUP = Gauge(
    "kondense_compressionjob_speedup",
    "Baseline p50 latency / compressed p50 latency of a finished CompressionJob.",
    _RESULT_LABELS,
    registry=REGISTRY,
)
METRIC_DROP = Gauge(
    "kondense_compressionjob_metric_drop",
    "Baseline task metric - compressed task metric of a finished CompressionJob.",
    _RESULT_LABELS,
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "kondense_reconcile_errors_total",
    "Reconciles that raised, by error type (they are retried on the next event).",
    ["kind"],
    registry=REGISTRY,
)

SEARCH_CANDIDATES = Counter(
    "kondense_search_candidates",
    "Candidates of the CompressionSearches this operator saw finish, by outcome: accepted (fully "
    "evaluated within the metric budget), rejected (measured, over the budget or not promoted "
    "past screening) or failed (no result).",
    ["outcome"],
    registry=REGISTRY,
)
SEARCH_DURATION = Histogram(
    "kondense_search_duration_seconds",
    "Seconds from start to completion of the CompressionSearches this operator saw finish.",
    ["phase"],
    buckets=(60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400),
    registry=REGISTRY,
)


def record_search_finished(phase: str, outcomes: list[str], seconds: float | None) -> None:
    """A search this process saw reach `phase` (Succeeded or Failed): count its candidates'
    outcomes and observe its duration. Called on the transition only, so a restart counts no
    search twice."""
    for outcome in outcomes:
        SEARCH_CANDIDATES.labels(outcome).inc()
    if seconds is not None:
        SEARCH_DURATION.labels(phase).observe(seconds)


class JobTable:
    """The last known (phase, recipe, pool) of each job; the by-phase gauge is its census."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._counted: set[tuple[str, str, str]] = set()  # the label sets JOBS has
        self._stalled: dict[tuple[str, str], tuple[str, str]] = {}  # job -> its STALLED labels

    def record(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        previous: dict[str, Any] | None = None,
    ) -> None:
        """Note `status`; a job reaching a terminal phase has its duration and results exported.
        `previous` is the status this process replaced with `status` (None: it only read it):
        a job that ends on its first reconcile is counted through it."""
        key = (namespace, name)
        phase, recipe = status.get("phase", "Pending"), status.get("recipe", "")
        pool = (status.get("runner") or {}).get("pool", "")
        with self._lock:
            before = self._jobs.get(key)
            self._jobs[key] = (phase, recipe, pool)
            self._census()
            self._mark_stalled(
                key, _stalled_reason(status) if phase not in TERMINAL else None, pool
            )
        if phase in TERMINAL and (before is None or before[0] != phase):
            moved = before is not None or (previous is not None and previous.get("phase") != phase)
            self._finished(namespace, name, recipe, pool, status, first=moved)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            entry = self._jobs.pop((namespace, name), None)
            self._census()
            self._mark_stalled((namespace, name), None, "")
        if entry is not None:
            for gauge in (SIZE_RATIO, SPEEDUP, METRIC_DROP):
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, name, entry[1], entry[2])

    def _census(self) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        for entry in self._jobs.values():
            counts[entry] = counts.get(entry, 0) + 1
        # Set, then remove what is gone: a scrape in between never sees a series vanish (a
        # clear() first left the gauge empty until it was filled again).
        for (phase, recipe, pool), count in counts.items():
            JOBS.labels(phase, recipe, pool).set(count)
        for labels in self._counted - counts.keys():
            with contextlib.suppress(KeyError):
                JOBS.remove(*labels)
        self._counted = set(counts)

    def _mark_stalled(self, key: tuple[str, str], reason: str | None, pool: str) -> None:
        """Export the job as stalled for `reason`, or (None) no longer."""
        labels = None if reason is None else (reason, pool)
        if self._stalled.get(key) == labels:
            return
        if key in self._stalled:
            with contextlib.suppress(KeyError):
                STALLED.remove(*key, *self._stalled.pop(key))
        if labels is not None:
            STALLED.labels(*key, *labels).set(1)
            self._stalled[key] = labels

    def _finished(
        self, namespace: str, name: str, recipe: str, pool: str, status: dict[str, Any], first: bool
    ) -> None:
        results = status.get("results") or {}
        labels = (namespace, name, recipe, pool)
        for gauge, key in (
            (SIZE_RATIO, "sizeRatio"),
            (SPEEDUP, "speedup"),
            (METRIC_DROP, "metricDrop"),
        ):
            if isinstance(results.get(key), int | float):
                gauge.labels(*labels).set(float(results[key]))
        # Only a transition this process saw is counted and timed, so a restart does not count
        # jobs twice.
        if not first:
            return
        FINISHED.labels(status["phase"], status.get("reason") or status["phase"], pool).inc()
        seconds = _seconds_between(status.get("startTime"), status.get("completionTime"))
        if seconds is not None:
            DURATION.labels(status["phase"], recipe, pool).observe(seconds)


def _stalled_reason(status: dict[str, Any]) -> str | None:
    """The reason of a True Stalled condition in `status`, else None."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return str(condition.get("reason") or "Stalled")
    return None


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
        return max(0.0, (parse(end) - parse(start)).total_seconds())
    except ValueError:
        return None


TABLE = JobTable()


def _version() -> str:
    try:
        return version("kondense")
    except PackageNotFoundError:
        return "unknown"


BUILD.info({"version": _version(), "python": platform.python_version()})


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on `port` from a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
