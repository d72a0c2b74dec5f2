"""Model file safety and format detection: every safe format is recognised, pickle never runs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import external_data_helper

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat, Task
from kondense.runners.core import Model
from kondense.runners.model import formats, onnx_files, torch_modules

# A pickle that would create this file if anything ever unpickled it.
CANARY = Path(os.environ.get("TMPDIR", "/tmp")) / "kondense-pickle-canary"


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(CANARY), "w"))


@pytest.fixture(autouse=True)
def _no_canary() -> Any:
    CANARY.unlink(missing_ok=True)
    yield
    assert not CANARY.exists(), "a model file was unpickled"


def test_onnx_file_is_detected_by_suffix_and_by_contents(tiny_onnx: Path, tmp_path: Path) -> None:
    assert formats.detect_format(tiny_onnx) is ModelFormat.onnx
    renamed = tmp_path / "model.bin.unknown"
    shutil.copy(tiny_onnx, renamed)
    assert formats.detect_format(renamed) is ModelFormat.onnx


def test_torchscript_and_pt2_are_told_apart_by_archive_contents(
    digits_cnn_torchscript: Path, digits_cnn_pt2: Path, tmp_path: Path
) -> None:
    # Swapped suffixes: the archive contents decide, not the name.
    ts = shutil.copy(digits_cnn_torchscript, tmp_path / "looks_like.pt2")
    pt2 = shutil.copy(digits_cnn_pt2, tmp_path / "looks_like.ts")
    assert formats.detect_format(Path(ts)) is ModelFormat.torchscript
    assert formats.detect_format(Path(pt2)) is ModelFormat.exported_program


def test_huggingface_directory_is_detected(minilm_dir: Path) -> None:
    assert formats.detect_format(minilm_dir) is ModelFormat.huggingface


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_pickled_state_dict_is_refused_without_unpickling(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    torch.save({"weight": torch.zeros(2), "payload": _Exploit()}, path)
    with pytest.raises(BadInput, match=r"pickled.*safetensors.*ONNX.*TorchScript.*\.pt2"):
        formats.detect_format(path)


def test_legacy_pickle_is_refused_whatever_its_name(tmp_path: Path) -> None:
    path = tmp_path / "model.weights"
    path.write_bytes(pickle.dumps(_Exploit(), protocol=4))
    with pytest.raises(BadInput, match="pickled"):
        formats.detect_format(path)


def test_directory_with_only_pytorch_model_bin_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(BadInput, match=r"pytorch_model\.bin.*safetensors"):
        formats.detect_format(tmp_path)


def test_unknown_file_and_missing_path_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "model.dat"
    junk.write_bytes(b"this is not a model at all" * 10)
    with pytest.raises(BadInput, match="not a model format"):
        formats.detect_format(junk)
    with pytest.raises(BadInput, match="no model at"):
        formats.detect_format(tmp_path / "absent.onnx")


def test_pt2_with_pickled_weights_is_refused(digits_cnn_pt2: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(digits_cnn_pt2) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            target.writestr(item, data)
    with pytest.raises(BadInput, match="pickled object"):
        torch_modules.load_exported_program(tampered)


def test_pt2_loads_without_torch_load_pickle(digits_cnn_pt2: Path, digits: dict) -> None:
    module = torch_modules.load_torch_module(
        Model(path=digits_cnn_pt2, format=ModelFormat.exported_program), Task.image_classification
    )
    assert module(torch.from_numpy(digits["x_test"][:4])).shape == (4, 10)
    # The torch.load patch is undone afterwards.
    assert torch.load.__name__ == "load"


def test_corrupt_onnx_is_refused(tmp_path: Path, tiny_onnx: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_onnx.read_bytes()[:-40] + b"\xff" * 40)
    with pytest.raises(BadInput, match=r"corrupt\.onnx"):
        onnx_files.check_onnx(corrupt)


def test_onnx_failing_the_checker_is_refused(tmp_path: Path, tiny_onnx: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    model.graph.node[0].input[1] = "no_such_tensor"
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(BadInput, match="fails the ONNX checker"):
        onnx_files.check_onnx(broken)


def _with_external_data(tiny_onnx: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(tiny_onnx))
    path = folder / "model.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    return path


def test_external_data_inside_the_folder_is_accepted(tiny_onnx: Path, tmp_path: Path) -> None:
    path = _with_external_data(tiny_onnx, tmp_path / "m")
    onnx_files.check_onnx(path)
    assert onnx_files.onnx_size_bytes(path) > path.stat().st_size


def _point_external_data(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for tensor in external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_external_data_escaping_the_model_folder_is_refused(
    tiny_onnx: Path, tmp_path: Path, kind: str
) -> None:
    path = _with_external_data(tiny_onnx, tmp_path / "m")
    outside = tmp_path / "secret.bin"
    shutil.copy(tmp_path / "m" / "weights.bin", outside)
    if kind == "absolute":
        _point_external_data(path, str(outside))
    elif kind == "dotdot":
        _point_external_data(path, "../secret.bin")
    else:
        (tmp_path / "m" / "link.bin").symlink_to(outside)
        _point_external_data(path, "link.bin")
    with pytest.raises(BadInput, match=r"external data.*(relative path|leaves|outside)"):
        onnx_files.check_onnx(path)


def test_minilm_embedding_module_outputs_normalized_mean_pooled_sentences(
    minilm_dir: Path,
) -> None:
    module = torch_modules.load_torch_module(
        Model(path=minilm_dir, format=ModelFormat.huggingface), Task.text_embedding
    )
    names = torch_modules.module_signature(module, None)
    assert names == ["input_ids", "token_type_ids", "attention_mask"]
    inputs = torch_modules.example_inputs(names, declared=None, tokenizer_dir=minilm_dir)
    with torch.no_grad():
        embeddings = module(*inputs)
        tokens = module.model(**dict(zip(names, inputs, strict=True)))[0]
    mask = inputs[2].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((tokens * mask).sum(1) / mask.sum(1), dim=1)
    assert embeddings.shape == (2, 384)
    np.testing.assert_allclose(embeddings.numpy(), expected.numpy(), atol=1e-5)


def test_torchscript_loads_and_names_its_inputs(digits_cnn_torchscript: Path) -> None:
    module = torch_modules.load_torch_module(
        Model(path=digits_cnn_torchscript, format=ModelFormat.torchscript), Task.generic
    )
    assert torch_modules.module_signature(module, None) == ["pixel_values"]


def test_export_inputs_need_declared_shapes_when_nothing_else_tells(digits_cnn: Any) -> None:
    with pytest.raises(BadInput, match=r"spec\.model\.inputs"):
        torch_modules.example_inputs(["pixel_values"], declared=None, tokenizer_dir=None)


def test_a_folder_with_one_onnx_model_is_that_model(tiny_onnx: Path, tmp_path: Path) -> None:
    folder = tmp_path / "downloaded"
    folder.mkdir()
    shutil.copy(tiny_onnx, folder / "model.onnx")
    (folder / "README.md").write_text("a model card")
    assert formats.locate_model(folder) == (folder / "model.onnx", ModelFormat.onnx)
