"""optimize: ONNX Runtime levels keep outputs, BERT fusion really fuses, order pitfalls handled."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fixtures.models import (
    SENTENCES,
    mean_cosine,
    minimal_spec,
    run_onnx,
    sentence_batch,
    step_context,
)

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat, OptimizeConfig, OptimizeLevel, TransformerFusion
from kondense.runners.core import Model
from kondense.runners.plan import make_plan
from kondense.runners.steps import load_step

optimize = load_step("optimize")


def _ops(path: Path) -> Counter[str]:
    return Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("level", list(OptimizeLevel))
def test_each_level_saves_a_model_with_unchanged_outputs(
    level: OptimizeLevel, digits_onnx: Path, digits: dict, tmp_path: Path
) -> None:
    reports: dict[str, Any] = {}
    ctx = step_context(tmp_path, reports.__setitem__)
    config = OptimizeConfig(level=level)
    result = optimize(Model(path=digits_onnx, format=ModelFormat.onnx), config, ctx)
    assert result.path == tmp_path / "model.onnx" and result.path.is_file()
    assert reports["optimizeLevel"] == level.value
    x = digits["x_test"][:16]
    np.testing.assert_allclose(
        run_onnx(result.path, {"pixel_values": x}),
        run_onnx(digits_onnx, {"pixel_values": x}),
        atol=1e-4,
    )
    fused = [op for op in _ops(result.path) if op.startswith("com.microsoft")]
    if level is OptimizeLevel.basic:
        assert not fused  # basic keeps standard ONNX ops only
    else:
        # Conv/Gemm + Relu fused from extended on (all may also re-layout Conv as NCHWc).
        assert {"com.microsoft:FusedConv", "com.microsoft:FusedGemm"} & set(fused)


def test_level_is_capped_at_basic_when_quantize_follows(digits_onnx: Path, tmp_path: Path) -> None:
    reports: dict[str, Any] = {}
    steps = [{"optimize": {"level": "all"}}, {"quantize": {"mode": "dynamic"}}]
    planned = make_plan(minimal_spec(tmp_path, steps=steps), ModelFormat.onnx).steps[0]
    assert "quantize step follows" in planned.reasons["optimizeLevelSaved"]
    ctx = step_context(tmp_path, reports.__setitem__)
    result = optimize(Model(path=digits_onnx, format=ModelFormat.onnx), planned.config, ctx)
    assert reports["optimizeLevel"] == "basic"
    assert not [op for op in _ops(result.path) if op.startswith("com.microsoft")]


def test_models_without_bert_config_skip_fusion_on_auto(tiny_onnx: Path, tmp_path: Path) -> None:
    reports: dict[str, Any] = {}
    ctx = step_context(tmp_path, reports.__setitem__)
    result = optimize(Model(path=tiny_onnx, format=ModelFormat.onnx), OptimizeConfig(), ctx)
    assert "fusedOperators" not in reports
    x = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    np.testing.assert_allclose(
        run_onnx(result.path, {"x": x}), run_onnx(tiny_onnx, {"x": x}), atol=1e-5
    )


def test_optimize_refuses_a_pytorch_model_with_a_hint_to_export(
    digits_cnn: Any, tmp_path: Path
) -> None:
    model = Model(path=tmp_path / "m.ts", format=ModelFormat.torchscript)
    with pytest.raises(BadInput, match="export step before optimize"):
        optimize(model, OptimizeConfig(), step_context(tmp_path))


@pytest.mark.slow
def test_bert_fusion_fuses_minilm_attention_and_layer_norms(
    minilm_onnx: Model, tmp_path: Path
) -> None:
    assets = minilm_onnx.assets
    assert assets is not None
    source = Model(path=minilm_onnx.path, format=ModelFormat.onnx, assets=assets)
    config = OptimizeConfig(level=OptimizeLevel.extended, transformer=TransformerFusion.auto)
    reports: dict[str, Any] = {}
    ctx = step_context(tmp_path, reports.__setitem__, task="text-embedding")
    result = optimize(source, config, ctx)
    ops = _ops(result.path)
    # MiniLM-L6: one Attention per layer, two SkipLayerNormalization per layer (minus the
    # first, fused into EmbedLayerNormalization).
    assert ops["com.microsoft:Attention"] == 6
    assert ops["com.microsoft:SkipLayerNormalization"] >= 11
    assert ops["com.microsoft:EmbedLayerNormalization"] == 1
    assert reports["fusedOperators"]["Attention"] == 6
    feeds = sentence_batch(assets, SENTENCES, 40)
    assert mean_cosine(run_onnx(result.path, feeds), run_onnx(minilm_onnx.path, feeds)) > 0.9999
    shutil.rmtree(tmp_path)


@pytest.mark.slow
def test_auto_fusion_is_skipped_before_int8_only(minilm_onnx: Model, tmp_path: Path) -> None:
    def fused_ops(mode: str, where: Path) -> list[str]:
        steps = [{"optimize": {}}, {"quantize": {"mode": mode}}]
        spec = minimal_spec(
            where, task="text-embedding", steps=steps, calibration={"uri": "unused.jsonl"}
        )
        config = make_plan(spec, ModelFormat.onnx).steps[0].config
        result = optimize(minilm_onnx, config, step_context(where, task="text-embedding"))
        return [op for op in _ops(result.path) if op.startswith("com.microsoft")]

    assert fused_ops("static", tmp_path / "static") == []
    assert fused_ops("dynamic", tmp_path / "dynamic") == []
    assert "com.microsoft:Attention" in fused_ops("fp16", tmp_path / "fp16")


def test_models_over_the_protobuf_limit_are_saved_with_external_data(
    digits_onnx: Path, digits: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kondense.runners.model import onnx_files

    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_THRESHOLD", 0)  # every model is "large"
    ctx = step_context(tmp_path, steps=[{"optimize": {"level": "extended"}}])
    result = optimize(Model(path=digits_onnx, format=ModelFormat.onnx), OptimizeConfig(), ctx)
    assert [p.name for p in onnx_files.external_data_files(result.path)] == ["model.onnx.data"]
    onnx_files.check_onnx(result.path)
    x = digits["x_test"][:8]
    np.testing.assert_allclose(
        run_onnx(result.path, {"pixel_values": x}),
        run_onnx(digits_onnx, {"pixel_values": x}),
        atol=1e-4,
    )
