"""quantize: dynamic INT8, static INT8 and FP16 each give a smaller model that stays close."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fixtures.models import (
    SENTENCES,
    build_tiny_onnx,
    mean_cosine,
    minimal_spec,
    relative_error,
    run_onnx,
    sentence_batch,
    step_context,
)
from onnx import numpy_helper

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat, QuantizeConfig, QuantizeMode
from kondense.runners.core import Model
from kondense.runners.model import onnx_files
from kondense.runners.plan import make_plan
from kondense.runners.steps import load_step

quantize = load_step("quantize")


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _quantize(
    source: Path,
    tmp_path: Path,
    config: dict[str, Any],
    reports: dict[str, Any] | None = None,
    **spec: Any,
) -> Model:
    steps = [{"quantize": config}]
    step_config = minimal_spec(tmp_path / "work", steps=steps, **spec).steps[0].config
    ctx = step_context(
        tmp_path / "work", reports.__setitem__ if reports is not None else None, steps=steps, **spec
    )
    return quantize(Model(path=source, format=ModelFormat.onnx), step_config, ctx)


def _digits_agreement(original: Path, quantized: Path, digits: dict) -> float:
    x = digits["x_test"]
    want = run_onnx(original, {"pixel_values": x}).argmax(1)
    got = run_onnx(quantized, {"pixel_values": x}).argmax(1)
    return float((want == got).mean())


def test_dynamic_int8_shrinks_the_cnn_and_keeps_its_predictions(
    digits_onnx: Path, digits: dict, tmp_path: Path
) -> None:
    reports: dict[str, Any] = {}
    result = _quantize(digits_onnx, tmp_path, {"mode": "dynamic"}, reports)
    # Every weight is INT8, the Gemm head included (rewritten as MatMul first).
    assert onnx_files.onnx_size_bytes(result.path) < onnx_files.onnx_size_bytes(digits_onnx) / 3.5
    assert "Gemm" not in _ops(result.path)
    assert _ops(result.path)["ConvInteger"] == 2
    assert _digits_agreement(digits_onnx, result.path, digits) >= 0.98
    assert reports["quantization"] == "dynamic"


def test_dynamic_int8_never_changes_its_input(digits_onnx: Path, tmp_path: Path) -> None:
    before = digits_onnx.read_bytes()
    _quantize(digits_onnx, tmp_path, {"mode": "dynamic"})
    assert digits_onnx.read_bytes() == before


def test_dynamic_int8_weights_are_per_channel_by_default(tiny_onnx: Path, tmp_path: Path) -> None:
    def scales(config: dict[str, Any], where: Path) -> list[int]:
        model = onnx.load(str(_quantize(tiny_onnx, where, config).path))
        return [int(np.prod(t.dims)) for t in model.graph.initializer if t.name.endswith("_scale")]

    assert max(scales({"mode": "dynamic"}, tmp_path / "a")) == 64  # one scale per column
    assert max(scales({"mode": "dynamic", "perChannel": False}, tmp_path / "b")) == 1


# What dynamic INT8 can promise on any CPU, as relative L2 error of the wide MLP's outputs on
# 64 random inputs (the bound the next two tests share). Measured: 0.013 with AVX512-VNNI/AMX
# kernels and 0.069 with AVX2-only u8s8 kernels, which saturate their 16-bit pair sums.
# A broken quantizer lands far above: one layer's weight scales doubled 0.95, permuted across
# channels 0.30, zero points off by 10 steps 0.19. Cosine would not do: it is blind to a
# wrong scale (doubled scales still score 0.993-0.997 against 0.997 for a correct AVX2 run).
INT8_RELATIVE_ERROR_BOUND = 0.12


def _wide_mlp_error(original: Path, quantized: Path) -> float:
    x = np.random.default_rng(1).normal(size=(64, 16)).astype(np.float32)
    return relative_error(run_onnx(quantized, {"x": x}), run_onnx(original, {"x": x}))


def test_dynamic_int8_of_a_tiny_graph_stays_close(tmp_path: Path) -> None:
    tiny_onnx = build_tiny_onnx(tmp_path / "wide.onnx", hidden=256)
    result = _quantize(tiny_onnx, tmp_path, {"mode": "dynamic"})
    assert _wide_mlp_error(tiny_onnx, result.path) < INT8_RELATIVE_ERROR_BOUND
    # Weights are a quarter; per-channel scales, float biases and names keep it near 40%.
    assert result.path.stat().st_size < tiny_onnx.stat().st_size * 0.5


@pytest.mark.parametrize("damage", ["scale doubled", "scales permuted", "zero point shifted"])
def test_the_int8_error_bound_catches_a_broken_quantizer(damage: str, tmp_path: Path) -> None:
    tiny_onnx = build_tiny_onnx(tmp_path / "wide.onnx", hidden=256)
    model = onnx.load(str(_quantize(tiny_onnx, tmp_path, {"mode": "dynamic"}).path))
    weights = {t.name: t for t in model.graph.initializer}
    name = "w1_zero_point" if damage == "zero point shifted" else "w1_scale"
    values = numpy_helper.to_array(weights[name]).copy()
    if damage == "scale doubled":
        values = values * 2
    elif damage == "scales permuted":
        values = np.random.default_rng(0).permutation(values)
    else:
        values = values + 10
    weights[name].CopyFrom(numpy_helper.from_array(values, name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    assert _wide_mlp_error(tiny_onnx, broken) > INT8_RELATIVE_ERROR_BOUND


def test_excluded_nodes_stay_float(tiny_onnx: Path, tmp_path: Path) -> None:
    result = _quantize(tiny_onnx, tmp_path, {"mode": "dynamic", "excludeNodes": ["fc2"]})
    ops = _ops(result.path)
    assert ops["MatMulInteger"] == 1 and ops["MatMul"] == 1


def test_fp16_halves_the_model_and_keeps_float32_io(
    digits_onnx: Path, digits: dict, tmp_path: Path
) -> None:
    result = _quantize(digits_onnx, tmp_path, {"mode": "fp16"})
    onnx_files.check_onnx(result.path)  # valid ONNX (nodes in topological order)
    model = onnx.load(str(result.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert onnx_files.onnx_size_bytes(result.path) < onnx_files.onnx_size_bytes(digits_onnx) * 0.55
    x = digits["x_test"][:64]
    np.testing.assert_allclose(
        run_onnx(result.path, {"pixel_values": x}),
        run_onnx(digits_onnx, {"pixel_values": x}),
        atol=0.05,
        rtol=0.01,
    )


def test_fp16_keeps_the_users_blocked_ops_in_float32(tiny_onnx: Path, tmp_path: Path) -> None:
    result = _quantize(tiny_onnx, tmp_path, {"mode": "fp16", "opBlockList": ["MatMul"]})
    weights = {t.name: t.data_type for t in onnx.load(str(result.path)).graph.initializer}
    assert weights["w1"] == onnx.TensorProto.FLOAT and weights["w2"] == onnx.TensorProto.FLOAT
    assert weights["b1"] == onnx.TensorProto.FLOAT16  # the Add is converted


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_calibrates_with_each_method(
    method: str, digits_onnx: Path, digits_npz: Path, digits: dict, tmp_path: Path
) -> None:
    reports: dict[str, Any] = {}
    ctx = step_context(
        tmp_path / "work",
        steps=[{"quantize": {"mode": "static", "calibrationMethod": method}}],
        calibration={"uri": str(digits_npz), "samples": 160},
    )
    ctx = replace(ctx, report=reports.__setitem__)
    config = QuantizeConfig(mode=QuantizeMode.static, calibration_method=method)
    result = quantize(Model(path=digits_onnx, format=ModelFormat.onnx), config, ctx)
    ops = _ops(result.path)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0  # QDQ format
    assert reports["calibrationSamples"] == 160
    assert onnx_files.onnx_size_bytes(result.path) < onnx_files.onnx_size_bytes(digits_onnx) / 3
    assert _digits_agreement(digits_onnx, result.path, digits) >= 0.95


def test_static_int8_without_calibration_is_refused(digits_onnx: Path, tmp_path: Path) -> None:
    ctx = step_context(tmp_path, steps=[{"quantize": {"mode": "dynamic"}}])
    config = QuantizeConfig(mode=QuantizeMode.static)  # the spec check bypassed on purpose
    with pytest.raises(BadInput, match=r"spec\.data\.calibration"):
        quantize(Model(path=digits_onnx, format=ModelFormat.onnx), config, ctx)


def test_calibration_data_with_wrong_inputs_is_refused(digits_onnx: Path, tmp_path: Path) -> None:
    data = tmp_path / "wrong.npz"
    np.savez(data, images=np.zeros((8, 1, 8, 8), np.float32))
    with pytest.raises(BadInput, match="pixel_values"):
        _quantize(digits_onnx, tmp_path, {"mode": "static"}, calibration={"uri": str(data)})


def test_quantize_refuses_a_pytorch_model(tmp_path: Path, digits_cnn: Any) -> None:
    ctx = step_context(tmp_path)
    model = Model(path=tmp_path, format=ModelFormat.huggingface, module=digits_cnn)
    with pytest.raises(BadInput, match="export step before quantize"):
        quantize(model, QuantizeConfig(mode=QuantizeMode.dynamic), ctx)


def test_quantize_leaves_no_scratch_files_behind(
    digits_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started_in = tmp_path / "cwd"
    started_in.mkdir()
    monkeypatch.chdir(started_in)
    _quantize(digits_onnx, tmp_path, {"mode": "dynamic"})
    assert list(started_in.iterdir()) == []


@pytest.mark.slow
def test_default_minilm_recipe_keeps_sentence_cosine(
    minilm_onnx: Model, minilm_dir: Path, tmp_path: Path
) -> None:
    # The default recipe: export -> optimize (defaults) -> quantize dynamic (defaults).
    assert minilm_onnx.assets is not None
    steps = [{"optimize": {}}, {"quantize": {"mode": "dynamic"}}]
    ctx = step_context(tmp_path / "o", task="text-embedding", steps=steps)
    plan = make_plan(
        minimal_spec(tmp_path / "o", task="text-embedding", steps=steps), ModelFormat.onnx
    )
    optimized = load_step("optimize")(minilm_onnx, plan.steps[0].config, ctx)
    qctx = replace(ctx, workdir=tmp_path / "q")
    qctx.workdir.mkdir()
    result = quantize(optimized, plan.steps[1].config, qctx)
    texts = [json.loads(line)["text"] for line in _corpus().read_text().splitlines()][:64]
    feeds = sentence_batch(minilm_onnx.assets, texts + SENTENCES, 128)
    cosine = mean_cosine(run_onnx(result.path, feeds), run_onnx(minilm_onnx.path, feeds))
    assert cosine >= 0.99
    ratio = onnx_files.onnx_size_bytes(minilm_onnx.path) / onnx_files.onnx_size_bytes(result.path)
    assert ratio >= 3.9


def _corpus() -> Path:
    return Path(__file__).resolve().parents[2] / "examples" / "data" / "sentences.jsonl"


@pytest.mark.parametrize("mode", ["dynamic", "static", "fp16"])
def test_models_over_the_protobuf_limit_keep_their_weights_in_external_data(
    mode: str,
    digits_onnx: Path,
    digits_npz: Path,
    digits: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every model counts as "over 2 GB": each stage must then read and write external data.
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_THRESHOLD", 0)
    result = _quantize(
        digits_onnx,
        tmp_path,
        {"mode": mode},
        calibration={"uri": str(digits_npz), "samples": 64},
    )
    assert onnx_files.external_data_files(result.path), "weights should sit beside the model"
    onnx_files.check_onnx(result.path)
    assert _digits_agreement(digits_onnx, result.path, digits) >= 0.95
