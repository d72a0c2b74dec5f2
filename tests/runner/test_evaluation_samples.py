"""spec.evaluation.samples caps the samples the metric is measured on (a search's screening
round), for the user's data and for kondense's built-in inputs alike."""

from __future__ import annotations

import json
from pathlib import Path

from runner.manifests import PIPELINE_EVALUATION, manifest, write_manifest
from typer.testing import CliRunner

from kondense.runners.cli import app

DYNAMIC = [{"quantize": {"mode": "dynamic"}}]


def evaluated_samples(tmp_path: Path, document: dict[str, object]) -> int:
    result = CliRunner().invoke(app, ["run", str(write_manifest(tmp_path / "job.yaml", document))])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    return int(report["results"]["evaluationSamples"])


def test_evaluation_samples_caps_the_users_evaluation_data(
    digits_onnx: Path, digits_npz: Path, tmp_path: Path
) -> None:
    document = manifest(
        digits_onnx,
        DYNAMIC,
        tmp_path / "out",
        task="image-classification",
        data={"evaluation": {"uri": str(digits_npz), "samples": 397}},
        evaluation={**PIPELINE_EVALUATION, "samples": 16},
    )
    assert evaluated_samples(tmp_path, document) == 16


def test_evaluation_samples_caps_the_builtin_images(digits_onnx: Path, tmp_path: Path) -> None:
    document = manifest(
        digits_onnx,
        DYNAMIC,
        tmp_path / "out",
        task="image-classification",
        evaluation={**PIPELINE_EVALUATION, "samples": 16},
    )
    assert evaluated_samples(tmp_path, document) == 16


def test_evaluation_samples_caps_synthetic_inputs(tiny_onnx: Path, tmp_path: Path) -> None:
    document = manifest(
        tiny_onnx, DYNAMIC, tmp_path / "out", evaluation={**PIPELINE_EVALUATION, "samples": 16}
    )
    assert evaluated_samples(tmp_path, document) == 16
