"""Task-specific distillation of MiniLM (6 layers) into a 3-layer student on unlabelled text."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from fixtures.training import job_spec, step_context

from kondense.api.spec import DistillConfig, ModelFormat
from kondense.runners.core import Model
from kondense.runners.steps.distill import run

DOMAIN_TEXT = Path(__file__).parents[2] / "examples" / "data" / "make_domain_text.py"


def _domain_text() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_domain_text", DOMAIN_TEXT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_minilm_distils_into_three_layers_close_to_the_teacher(
    minilm_dir: Path, tmp_path: Path
) -> None:
    train, held_out = _domain_text().write_split(tmp_path, train=640, heldout=128)
    spec = job_spec(
        {
            "distill": {
                "mode": "task-specific",
                "student": {"keepEvery": 2},
                "training": {"epochs": 3, "learningRate": 0.0003, "batchSize": 32},
            }
        },
        task="text-embedding",
        training={"uri": str(train), "samples": 640},
        evaluation={"uri": str(held_out), "samples": 128},
    )
    config = spec.steps[0].distill
    assert isinstance(config, DistillConfig)
    ctx, notes = step_context(spec, tmp_path / "work")

    result = run(Model(path=minilm_dir, format=ModelFormat.huggingface), config, ctx)

    print(f"held-out cosine to the teacher: {notes['evalCosineToTeacher']:.4f}")
    assert notes["student"] == "teacher layers 1,3,5"
    assert result.module.config.num_hidden_layers == 3
    assert notes["evalCosineToTeacher"] > 0.93  # measured 0.96; the untrained student: 0.52
    # The student is saved as a loadable Hugging Face directory with the teacher's tokenizer.
    assert (result.path / "model.safetensors").exists()
    assert (result.path / "tokenizer.json").exists()
    assert json.loads((result.path / "config.json").read_text())["num_hidden_layers"] == 3
