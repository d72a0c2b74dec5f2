"""spec.model for models defined in code: a safetensors file and the architecture that builds
it go together, and each mistake is named in the words the apiserver's CEL rules use."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kondense.api.crd import MODEL_RULES
from kondense.api.spec import (
    ARCHITECTURE_NEEDS_SAFETENSORS,
    NEEDS_ARCHITECTURE,
    CompressionJobSpec,
    ModelFormat,
)
from kondense.runners.plan import planned_format


def spec(**model: Any) -> CompressionJobSpec:
    return CompressionJobSpec.model_validate(
        {
            "model": {"uri": "s3://models/cnn.safetensors", **model},
            "steps": [{"prune": {"method": "structured", "amount": 0.5}}],
            "output": {"uri": "s3://out/cnn"},
        }
    )


def refusal(**model: Any) -> str:
    with pytest.raises(ValidationError) as refused:
        spec(**model)
    return str(refused.value)


def test_a_safetensors_model_with_its_architecture_and_arguments_parses() -> None:
    model = spec(
        format="safetensors",
        architecture="my_package.models:build",
        architectureArgs={"width": 32, "blocks": [2, 2]},
    ).model
    assert model.format is ModelFormat.safetensors
    assert model.architecture == "my_package.models:build"
    assert model.architecture_args == {"width": 32, "blocks": [2, 2]}


def test_a_safetensors_model_without_an_architecture_is_refused() -> None:
    assert NEEDS_ARCHITECTURE in refusal(format="safetensors")


@pytest.mark.parametrize("format", ["onnx", "huggingface", "torchscript", "exported-program"])
def test_only_safetensors_models_take_an_architecture(format: str) -> None:
    assert ARCHITECTURE_NEEDS_SAFETENSORS in refusal(format=format, architecture="pkg.m:build")


@pytest.mark.parametrize(
    "name", ["pkg.models.build", "pkg:models:build", "pkg models:build", ":build", "pkg:"]
)
def test_an_architecture_must_read_module_colon_function(name: str) -> None:
    assert "architecture" in refusal(format="safetensors", architecture=name)


def test_the_apiserver_refuses_them_in_the_same_words() -> None:
    assert [rule["message"] for rule in MODEL_RULES] == [
        NEEDS_ARCHITECTURE,
        ARCHITECTURE_NEEDS_SAFETENSORS,
    ]


def test_the_plan_knows_a_remote_safetensors_file_by_its_name() -> None:
    assert planned_format(spec(architecture="pkg.m:build"))[0] is ModelFormat.safetensors


def test_a_student_defined_in_code_parses_and_its_name_is_checked_the_same_way() -> None:
    def student(**given: Any) -> CompressionJobSpec:
        return CompressionJobSpec.model_validate(
            {
                "model": {"uri": "s3://models/cnn.safetensors", "architecture": "pkg.m:build"},
                "data": {"training": {"uri": "s3://d/train.npz"}},
                "steps": [{"distill": {"student": given}}],
                "output": {"uri": "s3://out/cnn"},
            }
        )

    config = student(architecture="pkg.m:build_small", architectureArgs={"width": 8})
    distill = config.steps[0].distill
    assert distill is not None
    assert distill.student.architecture == "pkg.m:build_small"
    assert distill.student.architecture_args == {"width": 8}
    with pytest.raises(ValidationError, match="architecture"):
        student(architecture="pkg.m.build_small")
