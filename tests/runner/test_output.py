"""The output folder: model.onnx with its external data renamed beside it, plus the assets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fixtures.models import build_tiny_onnx

from kondense.api.spec import ModelFormat
from kondense.runners.core import Model
from kondense.runners.engine import model_files, write_output


def test_external_data_is_written_as_model_onnx_data_and_still_loads(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    source = tmp_path / "src"
    source.mkdir()
    model = onnx.load(str(build_tiny_onnx(tmp_path / "tiny.onnx")))
    onnx.save(
        model,
        str(source / "optimized.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert [p.name for p in model_files(source / "optimized.onnx")] == [
        "optimized.onnx",
        "weights.bin",
    ]
    out = tmp_path / "out"
    write_output(
        Model(path=source / "optimized.onnx", format=ModelFormat.onnx),
        Model(path=tmp_path / "tiny.onnx", format=ModelFormat.onnx),
        out,
    )
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.data"]
    x = np.ones((2, 16), np.float32)
    expected = ort.InferenceSession(str(tmp_path / "tiny.onnx")).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_tokenizer_and_config_files_are_copied_but_weights_are_not(
    tmp_path: Path, minilm_dir: Path
) -> None:
    original = Model(path=minilm_dir, format=ModelFormat.huggingface, assets=minilm_dir)
    result = Model(path=build_tiny_onnx(tmp_path / "tiny.onnx"), format=ModelFormat.onnx)
    out = tmp_path / "out"
    write_output(result, original, out)
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "tokenizer.json", "config.json", "vocab.txt"} <= names
    assert not any(name.endswith((".safetensors", ".bin")) for name in names)
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 384
