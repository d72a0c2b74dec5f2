"""`make chaos`, reduced for `make test`: ten CompressionJobs (one real recipe, one on a pool the
configuration loses mid-run) through three SIGKILLs of the active one of two operator replicas
(one the moment a runner Job appears), finished runner pods deleted, a job deleted and
recreated under its name, and a latency window injected by Toxiproxy between the operators and
the apiserver. Every invariant count must be 0 (bench/chaos.py has the full run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from fixtures.cluster import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


def test_ten_jobs_survive_operator_kills_pool_removal_and_injected_latency(
    cluster: Cluster,
) -> None:
    spec = importlib.util.spec_from_file_location("kondense_bench_chaos", CHAOS)
    assert spec is not None and spec.loader is not None
    chaos = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(chaos)  # registered first: its dataclasses look themselves up
    plan = chaos.Plan(
        jobs=10,
        real=1,
        legacy=1,
        kills=3,
        kills_on_job_created=1,
        replicas=2,
        apiserver_restarts=0,  # the cluster is shared by the whole session: make chaos does it
        toxics=1,
        period_s=40,
        legacy_runner_s=15,
        timeout_s=240,
    )
    figures = chaos.run(plan, log=print)  # shown when the test fails
    report = json.dumps(figures.__dict__, indent=1)
    assert figures.kills_survived == 3, report
    assert figures.config_without_pool and figures.recreated == 1, report
    assert figures.toxic_windows == 1 and figures.finished_pods_deleted >= 1, report
    assert figures.jobs_lost == 0, report
    assert figures.jobs_failed == 0, report
    assert figures.duplicate_jobs == 0, report
    assert figures.terminal_regressions == 0, report
    assert figures.vanished_results == 0, report
