"""In a pod the runner keeps the job's absolute deadline (KONDENSE_DEADLINE, set by the
operator when it created the Job), so a retried pod gets what is left, not timeoutSeconds."""

from __future__ import annotations

import time

import pytest

from kondense.api.errors import DEADLINE_ENV, DeadlineExceeded
from kondense.runners.deadline import deadline, seconds_left


def test_without_a_deadline_the_whole_timeout_is_left() -> None:
    assert seconds_left(600, {}, now=1000.0) == 600


def test_a_retry_gets_only_what_is_left_of_the_jobs_time() -> None:
    assert seconds_left(600, {DEADLINE_ENV: "1450"}, now=1000.0) == pytest.approx(450)
    assert seconds_left(600, {DEADLINE_ENV: "9999"}, now=1000.0) == 600  # never more


def test_a_pod_started_after_the_deadline_stops_at_once_naming_the_timeout() -> None:
    left = seconds_left(600, {DEADLINE_ENV: "900"}, now=1000.0)
    started = time.monotonic()
    expected = r"spec\.timeoutSeconds.*600 s"
    with pytest.raises(DeadlineExceeded, match=expected), deadline(left, lambda: "x", limit=600):
        time.sleep(5)
    assert time.monotonic() - started < 1
