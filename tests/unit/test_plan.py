"""The plan: exports inserted where a step needs ONNX, optimize's automatic choices settled
with their reasons, and `kondense plan` printing it all before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fixtures.models import build_tiny_onnx, minimal_spec
from runner.manifests import manifest, write_manifest
from typer.testing import CliRunner

from kondense.api.spec import ModelFormat, OptimizeLevel, TransformerFusion
from kondense.api.steps import STEP_NAMES, STEPS, DeviceClass, recipe_device, recipe_label
from kondense.runners.cli import app
from kondense.runners.plan import make_plan
from kondense.runners.steps import RUNS


def _plan(tmp_path: Path, steps: list[dict[str, Any]], model_format: ModelFormat) -> Any:
    return make_plan(minimal_spec(tmp_path, steps=steps), model_format)


def test_a_torch_model_reuses_the_baseline_export_before_its_first_onnx_step(
    tmp_path: Path,
) -> None:
    plan = _plan(tmp_path, [{"quantize": {"mode": "dynamic"}}], ModelFormat.huggingface)
    assert plan.baseline_export is not None
    assert [s.name for s in plan.steps] == ["export", "quantize"]
    assert plan.steps[0].reuses_baseline
    assert plan.steps[0].reasons == {"auto": "baseline export reused before quantize"}


def test_a_pruned_model_is_exported_again_before_quantize_and_never_left_in_torch(
    tmp_path: Path,
) -> None:
    steps = [
        {"prune": {"amount": 0.5}},
        {"quantize": {"mode": "dynamic"}},
        {"prune": {"amount": 0.1}},
    ]
    plan = _plan(tmp_path, steps, ModelFormat.torchscript)
    assert [s.name for s in plan.steps] == ["prune", "export", "quantize", "prune", "export"]
    assert not plan.steps[1].reuses_baseline
    assert "before quantize" in plan.steps[1].reasons["auto"]
    assert "before evaluation" in plan.steps[-1].reasons["auto"]


def test_an_onnx_model_gets_no_export_and_no_baseline_export(tmp_path: Path) -> None:
    plan = _plan(tmp_path, [{"quantize": {"mode": "dynamic"}}], ModelFormat.onnx)
    assert plan.baseline_export is None
    assert [s.name for s in plan.steps] == ["quantize"]


def test_optimize_before_int8_is_settled_to_basic_without_fusion_with_reasons(
    tmp_path: Path,
) -> None:
    steps = [{"optimize": {"level": "all"}}, {"quantize": {"mode": "dynamic"}}]
    optimize = _plan(tmp_path, steps, ModelFormat.onnx).steps[0]
    assert optimize.config.level is OptimizeLevel.basic
    assert optimize.config.transformer is TransformerFusion.off
    assert "quantize step follows" in optimize.reasons["optimizeLevelSaved"]
    assert optimize.reasons["transformerFusion"] == "skipped: INT8 quantization follows"


def test_optimize_before_fp16_keeps_fusion_and_alone_keeps_everything(tmp_path: Path) -> None:
    fp16 = [{"optimize": {}}, {"quantize": {"mode": "fp16"}}]
    before_fp16 = _plan(tmp_path, fp16, ModelFormat.onnx).steps[0]
    assert before_fp16.config.transformer is TransformerFusion.auto
    assert before_fp16.config.level is OptimizeLevel.basic
    alone = _plan(tmp_path, [{"optimize": {"level": "all"}}], ModelFormat.onnx).steps[0]
    assert alone.config.level is OptimizeLevel.all and alone.reasons == {}


def test_every_registered_step_has_a_run_function_and_a_spec_field() -> None:
    assert set(RUNS) == set(STEP_NAMES) == set(STEPS)


def test_the_recipe_label_and_device_come_from_the_registry(tmp_path: Path) -> None:
    steps = [
        {"export": {}},
        {"prune": {"method": "structured", "amount": 0.5}},
        {"quantize": {"mode": "fp16"}},
    ]
    spec = minimal_spec(tmp_path, steps=steps)
    assert recipe_label(spec.steps) == "export>prune-structured>fp16"
    assert recipe_device(spec.steps) is DeviceClass.gpu
    int8 = minimal_spec(
        tmp_path, steps=[{"quantize": {"mode": "static"}}], calibration={"uri": "c.npz"}
    )
    assert recipe_label(int8.steps) == "int8-static"
    assert recipe_device(int8.steps) is DeviceClass.cpu


def test_kondense_plan_prints_the_steps_and_the_reasons(tmp_path: Path) -> None:
    build_tiny_onnx(tmp_path / "tiny.onnx")
    steps = [{"optimize": {}}, {"quantize": {"mode": "dynamic"}}]
    job = write_manifest(tmp_path / "job.yaml", manifest("tiny.onnx", steps, "out"))
    result = CliRunner().invoke(app, ["plan", str(job)])
    assert result.exit_code == 0, result.output
    assert "onnx, detected" in result.output
    assert "1. optimize: level=basic, transformer=off" in result.output
    assert "optimizeLevelSaved: basic (requested extended" in result.output
    assert "2. quantize: mode=dynamic" in result.output
    assert not (tmp_path / "out").exists()  # planning runs nothing
