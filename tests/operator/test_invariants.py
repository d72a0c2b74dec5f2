"""The invariant checker the cluster tests run after each test (fixtures/operator_cluster.py)
catches each kind of violation, so a green suite means the invariants held."""

from __future__ import annotations

from typing import Any

from fixtures.operator_cluster import History, _status_problems

RESULTS = {"sizeRatio": 2.0}
ARTIFACTS = [{"name": "model.onnx"}]


def done(generation: int = 1, **changes: Any) -> dict[str, Any]:
    status = {
        "observedGeneration": generation,
        "phase": "Succeeded",
        "reason": "Succeeded",
        "message": "2x smaller",
        "results": RESULTS,
        "artifacts": ARTIFACTS,
        "completionTime": "2026-01-01T00:00:00Z",
    }
    status.update(changes)
    return {k: v for k, v in status.items() if v is not None}


def running(generation: int = 1) -> dict[str, Any]:
    return {"observedGeneration": generation, "phase": "Running", "reason": "RunnerRunning"}


def test_a_kept_history_has_no_problems() -> None:
    assert _status_problems("u", [running(), done(), done(), running(2), done(2)]) == []


def test_erased_results_are_caught() -> None:
    problems = _status_problems("u", [running(), done(), done(results=None, artifacts=None)])
    assert any("vanished" in p for p in problems)


def test_a_terminal_status_rewritten_in_its_generation_is_caught() -> None:
    failed = done(phase="Failed", reason="UnknownNodePool", message="no pool")
    assert any("became" in p for p in _status_problems("u", [done(), failed]))


def test_a_second_runner_job_for_one_generation_is_caught() -> None:
    history = History()
    for uid in ("job-a", "job-b"):
        history.on_job(
            {
                "metadata": {
                    "namespace": "ns",
                    "uid": uid,
                    "labels": {
                        "kondense.dev/compressionjob-uid": "cj",
                        "kondense.dev/generation": "1",
                    },
                }
            }
        )
    assert history.job_problems("ns") == ["2 runner Jobs for uid cj generation 1"]
    assert history.job_problems("other") == []
