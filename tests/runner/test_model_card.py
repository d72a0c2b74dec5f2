"""The output folder explains itself: a Hugging Face model card and the report's environment."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from runner.manifests import PIPELINE_EVALUATION, manifest, write_manifest
from typer.testing import CliRunner

from kondense.api.spec import CompressionJob
from kondense.runners.cli import app
from kondense.runners.model_card import base_model


def test_the_output_has_a_model_card_and_the_report_its_environment(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    document = manifest(
        tiny_onnx,
        [{"quantize": {"mode": "dynamic"}}],
        tmp_path / "out",
        evaluation=PIPELINE_EVALUATION,
    )
    result = CliRunner().invoke(app, ["run", str(write_manifest(tmp_path / "j.yaml", document))])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "out" / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    metadata = yaml.safe_load(front)
    assert metadata["base_model"] == "tiny.onnx" and metadata["library_name"] == "onnx"
    assert "int8-dynamic" in metadata["tags"]
    assert "| size (MB) |" in body and "| agreement |" in body
    assert "synthetic inputs" in body  # what the metric was measured on
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "README.md" in {a["name"] for a in report["artifacts"]}
    environment = report["environment"]
    assert {"kondense", "onnxruntime", "onnx", "torch"} <= set(environment["packages"])
    assert environment["cpu"]["int8DotProduct"] in (
        "amx", "avx512-vnni", "avx-vnni", "avx2", "arm-dotprod", "none",
    )  # fmt: skip


def test_the_base_model_is_the_hub_id_the_config_names(minilm_dir: Path, tmp_path: Path) -> None:
    spec = CompressionJob.model_validate(
        manifest(minilm_dir, [{"export": {}}], tmp_path / "out")
    ).spec
    assert base_model(spec, minilm_dir) == "nreimers/MiniLM-L6-H384-uncased"
    (tmp_path / "config.json").write_text(json.dumps({"_name_or_path": "/home/me/checkpoint"}))
    assert base_model(spec, tmp_path) == "model"  # a local path is no Hub id: the folder's name
