"""`kondense validate` and `kondense schema`: exit codes and messages that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from runner.manifests import manifest, write_manifest
from typer.testing import CliRunner

from kondense.runners.cli import app

runner = CliRunner()


def validate(path: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["validate", str(path)])
    return result.exit_code, result.output


def test_a_good_manifest_validates_with_exit_0(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path / "job.yaml", manifest("m.onnx", [{"quantize": {"mode": "dynamic"}}], "out")
    )
    code, output = validate(path)
    assert code == 0, output
    assert "valid" in output


def test_the_shipped_examples_validate() -> None:
    examples = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.yaml"))
    jobs = [e for e in examples if yaml.safe_load(e.read_text()).get("kind") == "CompressionJob"]
    assert any(job.name == "minilm-int8.yaml" for job in jobs)
    for example in jobs:
        code, output = validate(example)
        if example.name.startswith("invalid-"):  # shipped to show the error a user gets
            assert code == 2 and "spec." in output, f"{example.name}: {output}"
            continue
        assert code == 0, f"{example.name}: {output}"


def test_each_problem_is_one_line_naming_the_camel_case_field(tmp_path: Path) -> None:
    document = manifest(
        "m.onnx",
        [
            {"export": {}},
            {"optimize": {}},
            {"quantize": {"mode": "int4"}},
            {"optimize": {}, "quantize": {"mode": "dynamic"}},
        ],
        "out",
        evaluation={"maxMetricDrop": 2, "warmUp": 3},
    )
    code, output = validate(write_manifest(tmp_path / "bad.yaml", document))
    assert code == 2
    lines = output.strip().splitlines()
    assert any(
        line.startswith(f"{tmp_path}/bad.yaml: spec.steps[2].quantize.mode:") for line in lines
    )
    assert any("spec.steps[3]: each step sets exactly one" in line for line in lines)
    assert any("spec.evaluation.maxMetricDrop:" in line for line in lines)
    assert any("spec.evaluation.warmUp: unknown field" in line for line in lines)
    assert len(lines) == 4


def test_cross_field_mistakes_name_each_field_on_its_own_line(tmp_path: Path) -> None:
    document = manifest("m.onnx", [{"quantize": {"mode": "static"}}], "out")
    document["spec"]["steps"].append({"distill": {}})
    code, output = validate(write_manifest(tmp_path / "job.yaml", document))
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 2
    assert "spec.data.calibration: static INT8 quantization needs calibration data" in lines[0]
    assert "spec.data.training: fine-tuning and distillation need training data" in lines[1]


def test_yaml_syntax_error_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: kondense.dev/v1alpha1\nspec:\n  steps: [\n    {export: {}\n")
    code, output = validate(path)
    assert code == 2
    assert "line 5" in output and "invalid YAML" in output


def test_missing_manifest_file_is_exit_2(tmp_path: Path) -> None:
    code, output = validate(tmp_path / "absent.yaml")
    assert code == 2 and "no such manifest file" in output


def test_wrong_kind_is_refused(tmp_path: Path) -> None:
    document = manifest("m.onnx", [{"quantize": {"mode": "dynamic"}}], "out")
    document["kind"] = "Deployment"
    code, output = validate(write_manifest(tmp_path / "job.yaml", document))
    assert code == 2 and "kind must be CompressionJob" in output


def test_schema_is_openapi_without_refs_in_json_and_yaml() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "$ref" not in result.output and "anyOf" not in result.output
    assert "x-kubernetes-validations" in schema
    steps = schema["properties"]["steps"]
    mode = steps["items"]["properties"]["quantize"]["properties"]["mode"]
    assert mode["enum"] == ["auto", "dynamic", "static", "fp16"]
    assert "maxMetricDrop" in schema["properties"]["evaluation"]["properties"]
    as_yaml = yaml.safe_load(runner.invoke(app, ["schema", "--format", "yaml"]).output)
    assert as_yaml == schema
