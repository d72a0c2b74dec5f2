"""Benchmarking reports the settings it ran with: threads, batch size, device, runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kondense.runners.measure.benchmark import benchmark_models, summarize
from kondense.runners.measure.inference import (
    Device,
    available_cpus,
    cgroup_cpu_limit,
    resolve_threads,
)

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


def test_a_cgroup_cpu_quota_caps_the_thread_count(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 3
    assert cgroup_cpu_limit(tmp_path / "absent") is None
