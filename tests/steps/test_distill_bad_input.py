"""Distillation inputs that cannot work are refused with BadInput naming the field to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures.training import in_memory, job_spec, step_context

from kondense.api.errors import BadInput
from kondense.api.spec import DistillConfig, ModelFormat
from kondense.runners.core import Model
from kondense.runners.steps.distill import run


def _run(model: Model, tmp_path: Path, step: dict[str, Any], **spec: Any) -> Model:
    job = job_spec({"distill": step}, **spec)
    config = job.steps[0].distill
    assert isinstance(config, DistillConfig)
    ctx, _ = step_context(job, tmp_path / "work")
    return run(model, config, ctx)


@pytest.mark.parametrize(("key", "value"), [("temperature", 0.5), ("alpha", 1.5)])
def test_temperature_and_alpha_bounds_are_enforced(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=key):
        job_spec({"distill": {key: value}}, training={"uri": "t.npz"})


def test_soft_targets_on_unlabelled_data_are_refused(
    digits_cnn: Any, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, pixel_values=digits["x_train"][:64])
    with pytest.raises(BadInput, match="needs labels") as refused:
        _run(
            in_memory(digits_cnn, tmp_path / "m.pt2"),
            tmp_path,
            {"mode": "soft-targets", "alpha": 0.3},
            training={"uri": str(unlabelled)},
        )
    assert refused.value.field == "spec.data.training.uri"


def test_student_with_other_outputs_than_the_teacher_is_refused(
    minilm_dir: Path, tmp_path: Path
) -> None:
    from transformers import BertConfig, BertModel

    student_dir = tmp_path / "student"
    tiny = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=30522,
    )
    BertModel(tiny).save_pretrained(str(student_dir), safe_serialization=True)
    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "the cache layer times out"}\n' * 8)

    with pytest.raises(BadInput, match=r"\[32\].*\[384\]") as refused:
        _run(
            Model(path=minilm_dir, format=ModelFormat.huggingface),
            tmp_path,
            {"mode": "task-specific", "student": {"uri": str(student_dir)}},
            task="text-embedding",
            training={"uri": str(text)},
        )
    assert refused.value.field == "distill.student.uri"


def test_student_that_is_not_a_model_directory_is_refused(
    digits_cnn: Any, digits_train_npz: Path, tmp_path: Path
) -> None:
    with pytest.raises(BadInput, match="not a Hugging Face model directory") as refused:
        _run(
            in_memory(digits_cnn, tmp_path / "m.pt2"),
            tmp_path,
            {"student": {"uri": str(digits_train_npz)}},
            training={"uri": str(digits_train_npz)},
        )
    assert refused.value.field == "distill.student.uri"
