"""Benchmarking reports the settings it ran with: threads, batch size, device, runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kondense.runners.benchmark import benchmark_models, summarize
from kondense.runners.inference import Device, available_cpus, resolve_threads

CPU = Device("cpu", "CPUExecutionProvider")


def test_summary_gives_median_p95_and_samples_per_second() -> None:
    timing = summarize([0.010] * 19 + [0.100], batch_size=4, threads=2, device=CPU)
    assert timing.latency_ms_p50 == pytest.approx(10.0)
    assert timing.latency_ms_p95 > timing.latency_ms_p50
    assert timing.throughput == pytest.approx(400.0)


def test_benchmark_reports_configured_threads_batch_and_run_count(tiny_onnx: Path) -> None:
    inputs = {"x": np.ones((8, 16), np.float32)}
    first, second = benchmark_models(
        [tiny_onnx, tiny_onnx], inputs, threads=1, device=CPU, warmup=2, runs=25
    )
    for timing in (first, second):
        assert (timing.threads, timing.batch_size, timing.runs) == (1, 8, 25)
        assert 0 < timing.latency_ms_p50 <= timing.latency_ms_p95
        assert timing.throughput > 0


def test_zero_threads_means_the_cpus_this_process_may_use() -> None:
    assert resolve_threads(3) == 3
    assert resolve_threads(0) == available_cpus()
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))
