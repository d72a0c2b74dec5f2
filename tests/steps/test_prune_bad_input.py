"""Prune inputs that cannot work are refused with BadInput naming the field to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures.training import in_memory, job_spec, step_context
from pydantic import ValidationError

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat, PruneConfig
from kondense.runners.core import Model
from kondense.runners.steps.prune import run

DIGITS_INPUTS = [{"name": "pixel_values", "shape": [1, 1, 8, 8]}]


def _run(model: Model, tmp_path: Path, step: dict[str, Any], **spec: Any) -> Model:
    job = job_spec({"prune": step}, **spec)
    config = job.steps[0].prune
    assert isinstance(config, PruneConfig)
    ctx, _ = step_context(job, tmp_path / "work")
    return run(model, config, ctx)


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5])
def test_prune_amount_out_of_range_is_refused(amount: float) -> None:
    with pytest.raises(ValidationError) as refused:
        job_spec({"prune": {"amount": amount}})
    assert any(error["loc"][-1] == "amount" for error in refused.value.errors())


def test_unknown_module_type_is_refused(digits_cnn: Any, tmp_path: Path) -> None:
    model = in_memory(digits_cnn, tmp_path / "m.pt2")
    with pytest.raises(BadInput, match="Conv9d") as refused:
        _run(model, tmp_path, {"amount": 0.5, "moduleTypes": ["Conv9d"]})
    assert refused.value.field == "prune.moduleTypes"


def test_module_types_the_model_lacks_are_refused(digits_cnn: Any, tmp_path: Path) -> None:
    model = in_memory(digits_cnn, tmp_path / "m.pt2")
    with pytest.raises(BadInput, match="no layers of type Conv1d") as refused:
        _run(model, tmp_path, {"amount": 0.5, "moduleTypes": ["Conv1d"]})
    assert refused.value.field == "prune.moduleTypes"


def test_fine_tuning_a_classifier_on_unlabelled_data_is_refused(
    digits_cnn: Any, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, pixel_values=digits["x_train"][:64])
    model = in_memory(digits_cnn, tmp_path / "m.pt2")
    with pytest.raises(BadInput, match="needs labels") as refused:
        _run(
            model,
            tmp_path,
            {"method": "structured", "amount": 0.5, "fineTune": {"epochs": 1}},
            training={"uri": str(unlabelled)},
            inputs=DIGITS_INPUTS,
        )
    assert refused.value.field == "spec.data.training.uri"


def test_structured_pruning_of_torchscript_is_refused(
    digits_cnn_torchscript: Path, tmp_path: Path
) -> None:
    model = Model(path=digits_cnn_torchscript, format=ModelFormat.torchscript)
    with pytest.raises(BadInput, match="torchscript models are compiled graphs") as refused:
        _run(model, tmp_path, {"method": "structured", "amount": 0.5}, inputs=DIGITS_INPUTS)
    assert refused.value.field == "spec.model.uri"


def test_pruning_an_exported_program_is_refused(digits_cnn_pt2: Path, tmp_path: Path) -> None:
    model = Model(path=digits_cnn_pt2, format=ModelFormat.exported_program)
    with pytest.raises(BadInput, match="before export") as refused:
        _run(model, tmp_path, {"method": "magnitude", "amount": 0.5})
    assert refused.value.field == "spec.model.uri"


def test_magnitude_pruning_of_torchscript_writes_a_sparse_torchscript_file(
    digits_cnn_torchscript: Path, tmp_path: Path
) -> None:
    model = Model(path=digits_cnn_torchscript, format=ModelFormat.torchscript)
    result = _run(model, tmp_path, {"method": "magnitude", "amount": 0.7, "scope": "global"})

    assert result.format is ModelFormat.torchscript and result.module is None
    pruned = torch.jit.load(str(result.path))
    weights = [p for name, p in pruned.named_parameters() if name.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / sum(w.numel() for w in weights) == pytest.approx(0.7, abs=0.01)
