"""The runner's memory grows with the model at most 2x its bytes (issue #17), measured on a
few-hundred-MB ONNX model with external data: `make bench-large` is the full-size version.

Each run is a child `kondense run` sampled from outside (tests/fixtures/large_models.py). What
a run costs whatever the model (Python, torch, ONNX Runtime: about 0.6 GB) is taken from the
same recipe on a 1 MB model and subtracted, so the ratio is the memory the model's bytes add.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fixtures.large_models import MemoryRun, run_with_memory, write_calibration, write_matmul_chain

HIDDEN = 2048
MODEL_BYTES = 300_000_000
MAX_RATIO = 2.0

pytestmark = pytest.mark.slow


def _job(folder: Path, model: Path, mode: str) -> Path:
    calibration = write_calibration(folder / "calibration.npz", hidden=HIDDEN, samples=100)
    document = {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": f"memory-{mode}"},
        "spec": {
            "model": {"uri": str(model), "format": "onnx", "task": "generic"},
            "data": {"calibration": {"uri": str(calibration), "samples": 100}},
            "steps": [{"optimize": {"level": "basic"}}, {"quantize": {"mode": mode}}],
            "evaluation": {
                "warmup": 1,
                "runs": 3,
                "threads": 1,
                "maxMetricDrop": 1.0,
                "requireSpeedup": False,
            },
            "output": {"uri": str(folder / "out")},
        },
    }
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump(document))
    return job


def _run(folder: Path, weight_bytes: int, mode: str) -> tuple[int, MemoryRun]:
    model = write_matmul_chain(folder / "model", weight_bytes=weight_bytes, hidden=HIDDEN)
    size = sum(f.stat().st_size for f in model.parent.iterdir())
    run = run_with_memory(_job(folder, model, mode), folder / "out")
    assert run.returncode == 0, "\n".join(run.log[-20:])
    return size, run


@pytest.mark.parametrize("mode", ["dynamic", "static", "fp16"])
def test_optimize_and_quantize_peak_under_twice_the_models_bytes(tmp_path: Path, mode: str) -> None:
    small_size, small = _run(tmp_path / "small", HIDDEN * HIDDEN * 4, mode)
    size, large = _run(tmp_path / "large", MODEL_BYTES, mode)
    added = large.peak_rss - small.peak_rss
    ratio = added / (size - small_size)
    stages = ", ".join(f"{s} {b / 1e9:.2f} GB" for s, b in large.stages.items())
    assert ratio <= MAX_RATIO, f"{mode}: {ratio:.2f}x the model's bytes; by stage: {stages}"
