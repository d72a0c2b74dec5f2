"""Magnitude (unstructured) pruning of the digits CNN: sparsity, permanence, compressed size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures.training import in_memory, job_spec, step_context

from kondense.api.spec import PruneConfig
from kondense.runners.steps.prune import run


def _prune(module: Any, tmp_path: Path, **config: Any) -> tuple[Any, dict[str, Any]]:
    spec = job_spec({"prune": {"method": "magnitude", **config}})
    step = spec.steps[0].prune
    assert isinstance(step, PruneConfig)
    ctx, notes = step_context(spec, tmp_path / "work")
    result = run(in_memory(module, tmp_path / "model.pt2"), step, ctx)
    return result.module, notes


@pytest.mark.parametrize("scope", ["local", "global"])
def test_magnitude_pruning_reaches_the_requested_sparsity(
    digits_cnn: Any, tmp_path: Path, scope: str
) -> None:
    pruned, notes = _prune(digits_cnn, tmp_path, amount=0.7, scope=scope)

    assert notes["sparsity"] == pytest.approx(0.7, abs=0.01)
    weights = [m.weight for m in pruned.modules() if type(m).__name__ in ("Linear", "Conv2d")]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / sum(w.numel() for w in weights) == pytest.approx(notes["sparsity"])
    assert notes["zeroParameters"] >= zeros


def test_magnitude_pruning_is_permanent(digits_cnn: Any, tmp_path: Path) -> None:
    pruned, _ = _prune(digits_cnn, tmp_path, amount=0.7)

    names = set(pruned.state_dict())
    assert not any(n.endswith(("weight_orig", "weight_mask")) for n in names)
    assert names == set(digits_cnn.state_dict())
    assert not any(hasattr(m, "weight_mask") for m in pruned.modules())


def test_magnitude_pruning_makes_the_compressed_file_smaller(
    digits_cnn: Any, tmp_path: Path
) -> None:
    _, notes = _prune(digits_cnn, tmp_path, amount=0.7)

    assert notes["weightsGzipBytes"] < 0.7 * notes["weightsGzipBytesBefore"]
    assert notes["parametersAfter"] == notes["parametersBefore"]  # same shape, only zeros
    assert "not faster" in notes["speed"]


def test_global_pruning_ranks_all_layers_together(digits_cnn: Any, tmp_path: Path) -> None:
    pruned, _ = _prune(digits_cnn, tmp_path, amount=0.7, scope="global")

    per_layer = [
        float((m.weight == 0).float().mean())
        for m in pruned.modules()
        if type(m).__name__ in ("Linear", "Conv2d")
    ]
    # Local pruning would give every layer 0.7; ranking globally spreads it unevenly.
    assert max(per_layer) - min(per_layer) > 0.1


def test_only_the_chosen_module_types_are_pruned(digits_cnn: Any, tmp_path: Path) -> None:
    pruned, _ = _prune(digits_cnn, tmp_path, amount=0.5, moduleTypes=["Conv2d"])

    linear = [m for m in pruned.modules() if type(m).__name__ == "Linear"]
    conv = [m for m in pruned.modules() if type(m).__name__ == "Conv2d"]
    assert all(float((m.weight == 0).float().mean()) < 0.01 for m in linear)
    assert all(float((m.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01) for m in conv)
