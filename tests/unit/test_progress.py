"""Progress of long stages: the estimate, its wording and how often a log gets a line."""

from __future__ import annotations

import pytest

from kondense.runners.progress import (
    StageClock,
    counted,
    duration,
    eta_seconds,
    figures,
    log_interval,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_is_the_time_left_at_the_rate_so_far() -> None:
    assert eta_seconds(10.0, 25, 100) == pytest.approx(30.0)
    assert eta_seconds(6.0, 1, 3) == pytest.approx(12.0)
    assert eta_seconds(5.0, 100, 100) == 0.0


def test_no_eta_without_a_total_or_before_anything_is_done() -> None:
    assert eta_seconds(10.0, 5, None) is None
    assert eta_seconds(10.0, 5, 0) is None
    assert eta_seconds(10.0, 0, 100) is None
    assert eta_seconds(10.0, 1, 1000) is None  # 0.1 %: too early to tell


def test_durations_read_as_minutes_then_hours() -> None:
    assert duration(0) == "0:00"
    assert duration(65.4) == "1:05"
    assert duration(3725) == "1:02:05"
    assert duration(-3) == "0:00"


def test_figures_say_count_percent_elapsed_and_eta() -> None:
    assert figures(12, 48, 3.0) == "12/48 (25%), 0:03 elapsed, ETA 0:09"
    assert figures(48, 48, 12.0) == "48/48 (100%), 0:12 elapsed, done"
    assert figures(0, 48, 1.0) == "0/48 (0%), 0:01 elapsed, ETA -"
    assert figures(3, None, 61.0) == "1:01 elapsed"


def _lines(clock: FakeClock, stage: StageClock, reports: list[tuple[float, str, int, int]]) -> list:
    out = []
    for at, description, done, total in reports:
        clock.now = at
        if stage.update(description, done, total):
            out.append(stage.line(done, total))
    return out


def test_a_stage_logs_its_start_then_one_line_per_interval_and_its_end() -> None:
    clock = FakeClock()
    stage = StageClock(interval=5.0, clock=clock)
    # 100 tensors, one every 0.5 s: 50 s of work.
    reports = [(100.0 + i * 0.5, "weights", i, 100) for i in range(101)]
    lines = _lines(clock, stage, reports)
    assert lines[0] == "weights (0/100)"
    assert lines[1] == "weights: 10/100 (10%), 0:05 elapsed, ETA 0:45"
    assert lines[-1] == "weights: 100/100 (100%), 0:50 elapsed, done"
    assert len(lines) == 1 + 10  # the start, then every 5 s (the last one is the end)


def test_a_new_description_or_a_restarted_count_is_a_new_stage() -> None:
    clock = FakeClock()
    stage = StageClock(interval=60.0, clock=clock)
    lines = _lines(
        clock,
        stage,
        [
            (100.0, "variant s8", 0, 4),
            (101.0, "variant s8", 2, 4),  # within the interval: no line
            (102.0, "variant s8", 4, 4),
            (103.0, "variant s8", 4, 4),  # the end is logged once
            (104.0, "variant u8", 0, 4),
            (110.0, "variant u8", 0, 4),  # the same loop run again
            (111.0, "variant u8", 2, 4),
        ],
    )
    assert lines == [
        "variant s8 (0/4)",
        "variant s8: 4/4 (100%), 0:02 elapsed, done",
        "variant u8 (0/4)",
    ]
    clock.now = 112.0
    assert stage.update("variant u8", 1, 4)  # the count went back: the loop restarted
    assert stage.line(1, 4) == "variant u8 (1/4)"
    assert stage.elapsed() == 0.0


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KONDENSE_PROGRESS_SECONDS", "0")
    assert log_interval() == 0.0
    monkeypatch.setenv("KONDENSE_PROGRESS_SECONDS", "soon")
    assert log_interval() == 10.0
    monkeypatch.delenv("KONDENSE_PROGRESS_SECONDS")
    assert StageClock().interval == 10.0


def test_counted_reports_before_the_first_item_and_after_each() -> None:
    seen: list[tuple[str, float, float | None]] = []
    items = list(counted("abc", lambda d, c, t: seen.append((d, c, t)), "letters", 3))
    assert items == ["a", "b", "c"]
    assert seen == [("letters", 0, 3), ("letters", 1, 3), ("letters", 2, 3), ("letters", 3, 3)]


def test_the_memory_benchmark_files_a_progress_line_under_its_stage() -> None:
    """bench-large's per-stage table: the figures a progress line ends with are not a stage of
    their own (each line was one row, thirty for a 6 GB model)."""
    from fixtures.large_models import stage_of

    clock = StageClock(interval=0.0, clock=lambda: 100.0)
    clock.update("quantize: static INT8, weight tensors", 3, 22)
    lines = [f"kondense: {clock.line(n, 22)}" for n in (3, 22)]
    lines.append(f"kondense: {clock.line(5, None)}")
    assert {stage_of(line) for line in lines} == {"quantize: static INT8, weight tensors"}
    assert stage_of("kondense: step 2/2: quantize") == "step 2/2: quantize"
    assert stage_of("a line of someone else") is None
