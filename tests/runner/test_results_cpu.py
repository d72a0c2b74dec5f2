"""results.cpu names the CPU that measured both models, as the report's environment has it:
a search says when its candidates were measured on different CPUs."""

from __future__ import annotations

import json
from pathlib import Path

from runner.manifests import PIPELINE_EVALUATION, manifest, write_manifest
from typer.testing import CliRunner

from kondense.runners.cli import app


def test_results_name_the_cpu_that_measured_them(tiny_onnx: Path, tmp_path: Path) -> None:
    document = manifest(
        tiny_onnx,
        [{"quantize": {"mode": "dynamic"}}],
        tmp_path / "out",
        evaluation=PIPELINE_EVALUATION,
    )
    result = CliRunner().invoke(app, ["run", str(write_manifest(tmp_path / "job.yaml", document))])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    cpu = report["environment"]["cpu"]
    assert report["results"]["cpu"] == f"{cpu['model']} ({cpu['int8DotProduct']})"
