"""Soft-target distillation of the digits CNN into a half-width student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures.models import accuracy
from fixtures.training import in_memory, job_spec, step_context

from kondense.api.spec import DistillConfig
from kondense.runners.nn.losses import kd_loss
from kondense.runners.steps.distill import run

# A small labelled set: where hard labels alone over-fit, the teacher's soft targets help.
TRAINING_SAMPLES = 200


def _distill(
    teacher: Any, tmp_path: Path, data: dict[str, Any], **config: Any
) -> tuple[Any, dict[str, Any]]:
    spec = job_spec({"distill": config}, training=data)
    step = spec.steps[0].distill
    assert isinstance(step, DistillConfig)
    ctx, notes = step_context(spec, tmp_path / "work")
    result = run(in_memory(teacher, tmp_path / "model.pt2"), step, ctx)
    return result.module, notes


def test_kd_student_beats_the_same_student_on_hard_labels_alone(
    digits_cnn: Any, digits: dict[str, np.ndarray], digits_train_npz: Path, tmp_path: Path
) -> None:
    data = {"uri": str(digits_train_npz), "samples": TRAINING_SAMPLES}
    same = {
        "student": {"width": 0.5, "initFromTeacher": False},
        "training": {"epochs": 30, "learningRate": 0.003, "batchSize": 32, "seed": 0},
    }
    kd, kd_notes = _distill(digits_cnn, tmp_path / "kd", data, alpha=0.3, **same)
    hard, _ = _distill(digits_cnn, tmp_path / "hard", data, alpha=1.0, **same)

    kd_accuracy = accuracy(kd, digits["x_test"], digits["y_test"])
    hard_accuracy = accuracy(hard, digits["x_test"], digits["y_test"])
    assert kd_accuracy > hard_accuracy + 0.01
    assert kd_notes["studentParameters"] < 0.5 * kd_notes["teacherParameters"]
    assert [m.out_channels for m in kd.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 32]


def test_derived_student_starts_from_the_teacher(
    digits_cnn: Any, digits: dict[str, np.ndarray], digits_train_npz: Path, tmp_path: Path
) -> None:
    data = {"uri": str(digits_train_npz), "samples": 400}
    student, notes = _distill(
        digits_cnn, tmp_path, data, student={"width": 0.5}, training={"epochs": 2}
    )

    assert accuracy(student, digits["x_test"], digits["y_test"]) > 0.95
    assert notes["student"] == "teacher at width 0.5"


def test_time_budget_ends_training_and_keeps_the_best_checkpoint(
    digits_cnn: Any, digits_train_npz: Path, tmp_path: Path
) -> None:
    data = {"uri": str(digits_train_npz), "samples": 1400}
    _, notes = _distill(
        digits_cnn,
        tmp_path,
        data,
        training={"epochs": 1000, "maxTrainSeconds": 1, "batchSize": 16},
    )

    assert notes["trainStoppedByBudget"] == "true"
    assert notes["trainEpochs"] < 1000
    assert notes["trainCheckpoint"] == "best validation loss"


def test_task_specific_distillation_needs_no_labels(
    digits_cnn: Any, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, pixel_values=digits["x_train"])
    student, notes = _distill(
        digits_cnn,
        tmp_path,
        {"uri": str(unlabelled), "samples": 600},
        mode="task-specific",
        student={"width": 0.5},
        training={"epochs": 3},
    )

    assert notes["alpha"] == 0.0
    agreement = accuracy(student, digits["x_test"], accuracy_labels(digits_cnn, digits))
    assert agreement > 0.95


def accuracy_labels(teacher: Any, digits: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return teacher(torch.from_numpy(digits["x_test"])).argmax(dim=1).numpy()  # type: ignore[no-any-return]


def test_kd_loss_is_the_documented_formula() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 10), torch.randn(4, 10)
    labels = torch.tensor([1, 2, 3, 4])
    t, alpha = 4.0, 0.3
    p_teacher = torch.softmax(teacher / t, dim=-1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / t, dim=-1))).sum(-1).mean()
    expected = alpha * torch.nn.functional.cross_entropy(student, labels) + (1 - alpha) * t**2 * kl

    assert float(kd_loss(student, teacher, labels, t, alpha)) == pytest.approx(float(expected))
