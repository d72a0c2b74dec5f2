"""Structured (channel) pruning of the digits CNN: a smaller, faster dense network that
fine-tuning brings back to the original's accuracy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures.models import accuracy
from fixtures.training import in_memory, job_spec, step_context

from kondense.api.spec import PruneConfig
from kondense.runners.steps.prune import run

DIGITS_INPUTS = [{"name": "pixel_values", "shape": [1, 1, 8, 8]}]


def _prune(
    module: Any, tmp_path: Path, training: dict[str, Any] | None = None, **config: Any
) -> tuple[Any, dict[str, Any]]:
    spec = job_spec(
        {"prune": {"method": "structured", **config}}, training=training, inputs=DIGITS_INPUTS
    )
    step = spec.steps[0].prune
    assert isinstance(step, PruneConfig)
    ctx, notes = step_context(spec, tmp_path / "work")
    result = run(in_memory(module, tmp_path / "model.pt2"), step, ctx)
    return result.module, notes


def _fastest_ms(module: Any, x: torch.Tensor, runs: int) -> float:
    """The fastest of `runs` calls: load from other processes only ever adds time, so the
    minimum is the steadiest estimate on a shared machine."""
    times = []
    with torch.no_grad():
        for _ in range(runs):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return min(times) * 1000


def test_structured_pruning_gives_a_smaller_faster_dense_network(
    digits_cnn: Any, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    pruned, notes = _prune(digits_cnn, tmp_path, amount=0.5)

    conv = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in conv] == [16, 32]
    assert notes["parametersAfter"] < 0.5 * notes["parametersBefore"]
    assert pruned(torch.zeros(3, 1, 8, 8)).shape == (3, 10)  # same classes out
    # No zeros hiding inside: the network is physically smaller, not masked.
    assert all(float((m.weight == 0).float().mean()) < 0.01 for m in conv)

    x = torch.from_numpy(digits["x_test"][:256])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: no waiting on a second core others may hold
    try:
        for module in (digits_cnn, pruned):  # warm up both before timing
            _fastest_ms(module, x, 3)
        original_ms, pruned_ms = [], []
        for _ in range(10):  # interleaved, so load from other processes hits both alike
            original_ms.append(_fastest_ms(digits_cnn, x, 3))
            pruned_ms.append(_fastest_ms(pruned, x, 3))
    finally:
        torch.set_num_threads(threads)
    # About 4x fewer multiply-adds; "faster" is asserted with a wide margin.
    assert min(pruned_ms) < 0.8 * min(original_ms)
    assert np.median(pruned_ms) < np.median(original_ms)


def test_fine_tuning_brings_pruned_accuracy_back(
    digits_cnn: Any, digits: dict[str, np.ndarray], digits_train_npz: Path, tmp_path: Path
) -> None:
    original = accuracy(digits_cnn, digits["x_test"], digits["y_test"])
    untuned, _ = _prune(digits_cnn, tmp_path / "a", amount=0.5)
    tuned, notes = _prune(
        digits_cnn,
        tmp_path / "b",
        amount=0.5,
        training={"uri": str(digits_train_npz), "samples": 1400},
        fineTune={"epochs": 4, "learningRate": 0.001, "batchSize": 32},
    )

    lost = accuracy(untuned, digits["x_test"], digits["y_test"])
    recovered = accuracy(tuned, digits["x_test"], digits["y_test"])
    assert lost < original - 0.02  # pruning alone costs accuracy...
    assert recovered >= original - 0.02  # ...and fine-tuning wins it back
    assert notes["fineTuneCheckpoint"] == "best validation loss"
    assert notes["fineTuneSteps"] > 0


def test_fine_tuning_is_deterministic_with_a_seed(
    digits_cnn: Any, digits_train_npz: Path, tmp_path: Path
) -> None:
    fine_tune = {"epochs": 1, "batchSize": 64, "seed": 7}
    training = {"uri": str(digits_train_npz), "samples": 400}
    first, _ = _prune(digits_cnn, tmp_path / "a", training, amount=0.5, fineTune=fine_tune)
    second, _ = _prune(digits_cnn, tmp_path / "b", training, amount=0.5, fineTune=fine_tune)

    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("amount", [0.25, 0.75])
def test_structured_amount_sets_the_channels_removed(
    digits_cnn: Any, tmp_path: Path, amount: float
) -> None:
    pruned, _ = _prune(digits_cnn, tmp_path, amount=amount)

    first = next(m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.out_channels == round(32 * (1 - amount))
