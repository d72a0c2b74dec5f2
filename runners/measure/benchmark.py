"""Latency and throughput of models measured with one set of settings.

Each model gets untimed warm-up runs before its timed runs. `benchmark_models` holds every
model's session and alternates the timed runs between them in rounds, so a noisy neighbour
slows all alike (tuning candidates, which are small); `benchmark_session` times one session,
which is how a job's baseline and result are measured: one after the other, so that a large
model and its result are never in memory together (runners/measure/side_by_side.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kondense.runners.measure.inference import Device, feed, open_session

ROUNDS = 10


@dataclass(frozen=True)
class Timing:
    """Per-batch latency in milliseconds and samples per second at `batch_size`."""

    latency_ms_p50: float
    latency_ms_p95: float
    throughput: float
    batch_size: int
    threads: int
    device: Device
    runs: int


def summarize(seconds: Sequence[float], *, batch_size: int, threads: int, device: Device) -> Timing:
    """p50/p95 latency and throughput from per-run wall times (seconds)."""
    values = np.asarray(seconds, dtype=np.float64)
    p50 = float(np.percentile(values, 50))
    return Timing(
        latency_ms_p50=p50 * 1000,
        latency_ms_p95=float(np.percentile(values, 95)) * 1000,
        throughput=batch_size / p50 if p50 > 0 else 0.0,
        batch_size=batch_size,
        threads=threads,
        device=device,
        runs=len(values),
    )


def benchmark_models(
    models: Sequence[Path],
    inputs: dict[str, np.ndarray],
    *,
    threads: int,
    device: Device,
    warmup: int,
    runs: int,
) -> list[Timing]:
    """Time each model on the same `inputs` (one batch) with the same settings, interleaved."""
    sessions = [open_session(path, threads=threads, device=device) for path in models]
    feeds = [feed(session, inputs) for session in sessions]
    batch_size = len(next(iter(inputs.values())))
    for session, data in zip(sessions, feeds, strict=True):
        for _ in range(warmup):
            session.run(None, data)
    times: list[list[float]] = [[] for _ in sessions]
    per_round = max(1, -(-runs // ROUNDS))
    while len(times[0]) < runs:
        for index, (session, data) in enumerate(zip(sessions, feeds, strict=True)):
            for _ in range(min(per_round, runs - len(times[index]))):
                start = time.perf_counter()
                session.run(None, data)
                times[index].append(time.perf_counter() - start)
    return [summarize(t, batch_size=batch_size, threads=threads, device=device) for t in times]


def benchmark_session(
    session: Any,
    inputs: dict[str, np.ndarray],
    *,
    threads: int,
    device: Device,
    warmup: int,
    runs: int,
) -> Timing:
    """Time `session` on `inputs` (one batch): `warmup` untimed runs, then `runs` timed ones."""
    data = feed(session, inputs)
    for _ in range(warmup):
        session.run(None, data)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, data)
        times.append(time.perf_counter() - start)
    batch_size = len(next(iter(inputs.values())))
    return summarize(times, batch_size=batch_size, threads=threads, device=device)
