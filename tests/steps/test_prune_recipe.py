"""prune -> export -> quantize in one job: each step's notes and the total effect in the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from kondense.api.spec import CompressionJob
from kondense.runners.engine import run_job


def test_prune_export_quantize_reports_each_step_and_the_total(
    digits_cnn_torchscript: Path, digits_npz: Path, digits_train_npz: Path, tmp_path: Path
) -> None:
    pytest.importorskip("kondense.runners.steps.quantize")
    job = CompressionJob.model_validate(
        {
            "apiVersion": "kondense.dev/v1alpha1",
            "kind": "CompressionJob",
            "metadata": {"name": "digits-prune-int8"},
            "spec": {
                "model": {
                    "uri": str(digits_cnn_torchscript),
                    "task": "image-classification",
                    "inputs": [{"name": "pixel_values", "shape": [1, 1, 8, 8]}],
                },
                "data": {
                    "training": {"uri": str(digits_train_npz), "samples": 1400},
                    "evaluation": {"uri": str(digits_npz), "samples": 397},
                },
                "steps": [
                    {
                        "prune": {
                            "amount": 0.7,
                            "scope": "global",
                            "fineTune": {"epochs": 2, "batchSize": 32},
                        }
                    },
                    {"export": {}},
                    {"quantize": {"mode": "dynamic"}},
                ],
                "evaluation": {
                    "metric": "accuracy",
                    "maxMetricDrop": 0.02,
                    "requireSpeedup": False,
                    "batchSize": 32,
                    "warmup": 2,
                    "runs": 20,
                    "threads": 1,
                },
                "output": {"uri": str(tmp_path / "out")},
            },
        }
    )

    report = run_job(job)

    steps = {step.name: step for step in report.steps}
    assert list(steps) == ["prune", "export", "quantize"]
    prune_notes = steps["prune"].notes or {}
    assert prune_notes["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert prune_notes["fineTuneSteps"] > 0
    results = report.results
    assert results is not None and results.accepted
    # Total effect: pruning's zeros and INT8's smaller numbers together.
    assert results.compressed.compressed_bytes is not None
    assert results.baseline.compressed_bytes is not None
    assert results.compressed.compressed_bytes < results.baseline.compressed_bytes / 4
    assert results.size_ratio > 3
    assert results.metric_drop <= 0.02
