"""export: every PyTorch format becomes ONNX that computes what torch computes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from fixtures.models import (
    DIGITS_INPUTS,
    SENTENCES,
    mean_cosine,
    run_onnx,
    sentence_batch,
    step_context,
)

from kondense.api.errors import BadInput
from kondense.api.spec import ExportConfig, ModelFormat
from kondense.runners.core import Model
from kondense.runners.model import onnx_files, torch_modules
from kondense.runners.steps import export as export_step
from kondense.runners.steps import load_step

export = load_step("export")


def _torch_logits(module: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(x)).numpy())


def _assert_digits_onnx_matches(path: Path, digits_cnn: Any, digits: dict) -> None:
    x = digits["x_test"][:37]  # a batch size the export never saw: the batch axis is dynamic
    got = run_onnx(path, {"pixel_values": x})
    np.testing.assert_allclose(got, _torch_logits(digits_cnn, x), atol=1e-4)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["pixel_values"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert onnx.load(str(path)).opset_import[0].version == 17


def test_in_memory_module_exports_with_a_dynamic_batch(
    digits_onnx: Path, digits_cnn: Any, digits: dict
) -> None:
    _assert_digits_onnx_matches(digits_onnx, digits_cnn, digits)


def test_torchscript_exports_and_matches_torch(
    digits_cnn_torchscript: Path, digits_cnn: Any, digits: dict, tmp_path: Path
) -> None:
    ctx = step_context(tmp_path, inputs=DIGITS_INPUTS)
    model = Model(path=digits_cnn_torchscript, format=ModelFormat.torchscript)
    result = export(model, ExportConfig(), ctx)
    assert result.format is ModelFormat.onnx
    _assert_digits_onnx_matches(result.path, digits_cnn, digits)


def test_exported_program_exports_from_its_own_example_inputs(
    digits_cnn_pt2: Path, digits_cnn: Any, digits: dict, tmp_path: Path
) -> None:
    # No spec.model.inputs: the .pt2 archive's saved example inputs are enough.
    ctx = step_context(tmp_path)
    model = Model(path=digits_cnn_pt2, format=ModelFormat.exported_program)
    result = export(model, ExportConfig(), ctx)
    _assert_digits_onnx_matches(result.path, digits_cnn, digits)


def test_opset_is_configurable(digits_cnn: Any, tmp_path: Path) -> None:
    ctx = step_context(tmp_path, inputs=DIGITS_INPUTS)
    model = Model(path=tmp_path / "mem", format=ModelFormat.torchscript, module=digits_cnn)
    result = export(model, ExportConfig(opset=18), ctx)
    assert onnx.load(str(result.path)).opset_import[0].version == 18


def test_onnx_input_passes_through_after_the_checker(tiny_onnx: Path, tmp_path: Path) -> None:
    model = Model(path=tiny_onnx, format=ModelFormat.onnx)
    assert export(model, ExportConfig(), step_context(tmp_path)) == model
    tiny_onnx.write_bytes(b"\x08\x07garbage" * 5)
    with pytest.raises(BadInput, match="ONNX"):
        export(model, ExportConfig(), step_context(tmp_path))


def test_module_without_declared_inputs_is_refused_with_the_field(
    digits_cnn: Any, tmp_path: Path
) -> None:
    model = Model(path=tmp_path / "mem", format=ModelFormat.torchscript, module=digits_cnn)
    with pytest.raises(BadInput, match=r"spec\.model\.inputs"):
        export(model, ExportConfig(), step_context(tmp_path))


def test_minilm_exports_sentence_embeddings_with_dynamic_batch_and_sequence(
    minilm_onnx: Model, minilm_dir: Path
) -> None:
    assert minilm_onnx.assets is not None
    for name in ("tokenizer.json", "config.json", "modules.json", "1_Pooling/config.json"):
        assert (minilm_onnx.assets / name).is_file(), name
    graph = onnx.load(str(minilm_onnx.path)).graph
    assert [o.name for o in graph.output] == ["sentence_embedding"]
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]

    module = torch_modules.load_torch_module(
        Model(path=minilm_dir, format=ModelFormat.huggingface), minilm_onnx_task()
    )
    for length in (16, 48):
        feeds = sentence_batch(minilm_dir, SENTENCES[:3], length)
        got = run_onnx(minilm_onnx.path, feeds)
        with torch.no_grad():
            names = torch_modules.module_signature(module, None)
            want = module(*[torch.from_numpy(feeds[n]) for n in names]).numpy()
        assert got.shape == (3, 384)
        assert mean_cosine(got, want) > 0.99999


def minilm_onnx_task() -> Any:
    from kondense.api.spec import Task

    return Task.text_embedding


def _spread_over_files(tiny_onnx: Path, folder: Path) -> Path:
    folder.mkdir()
    spread = folder / "model.onnx"
    onnx.save(
        onnx.load(str(tiny_onnx)),
        str(spread),
        save_as_external_data=True,
        all_tensors_to_one_file=False,
        size_threshold=0,
    )
    assert len(onnx_files.external_data_files(spread)) == 4
    return spread


def test_large_model_weights_go_to_one_external_file(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch writes one file per tensor for >2 GB models; export leaves one data file beside.
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_THRESHOLD", 0)  # "large" = any weights
    spread = _spread_over_files(tiny_onnx, tmp_path / "m")
    onnx_files.consolidate_external_data(spread)
    assert [p.name for p in onnx_files.external_data_files(spread)] == ["model.onnx.data"]
    assert sorted(p.name for p in spread.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    onnx_files.check_onnx(spread)
    x = np.ones((2, 16), np.float32)
    np.testing.assert_allclose(run_onnx(spread, {"x": x}), run_onnx(tiny_onnx, {"x": x}))


def test_small_model_weights_are_kept_inside_the_model_file(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    spread = _spread_over_files(tiny_onnx, tmp_path / "m")
    onnx_files.consolidate_external_data(spread)
    assert [p.name for p in spread.parent.iterdir()] == ["model.onnx"]
    x = np.ones((2, 16), np.float32)
    np.testing.assert_allclose(run_onnx(spread, {"x": x}), run_onnx(tiny_onnx, {"x": x}))


def test_model_alone_in_its_folder_is_not_parsed_again(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch writes weights beside the model only for >2 GB models; a model with nothing
    # beside it holds its weights inside, and parsing them would cost twice their bytes.
    alone = tmp_path / "m" / "model.onnx"
    alone.parent.mkdir()
    alone.write_bytes(tiny_onnx.read_bytes())

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(onnx, "load_model", refuse)
    onnx_files.consolidate_external_data(alone)
    assert alone.read_bytes() == tiny_onnx.read_bytes()


def test_a_large_model_alone_in_its_folder_moves_its_weights_beside_it(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch's exporter keeps a model under 2 GB in one file; over the threshold its weights
    # move to model.onnx.data, so the later steps read the graph without parsing them.
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_THRESHOLD", 1024)
    alone = tmp_path / "m" / "model.onnx"
    alone.parent.mkdir()
    alone.write_bytes(tiny_onnx.read_bytes())
    onnx_files.consolidate_external_data(alone)
    assert sorted(p.name for p in alone.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert alone.stat().st_size < 1024
    x = np.ones((2, 16), np.float32)
    np.testing.assert_allclose(run_onnx(alone, {"x": x}), run_onnx(tiny_onnx, {"x": x}))


def test_torch_model_loaded_by_export_is_freed_before_the_onnx_checks(
    digits_cnn_torchscript: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checker and the ONNX Runtime session each hold the ONNX model; with the torch
    # weights still alive a large model's export needed one copy more.
    import dataclasses
    import weakref

    loaded: list[weakref.ref[Any]] = []
    alive_at: dict[str, bool] = {}
    load = torch_modules.load_torch_module

    def tracked_load(*args: Any, **kwargs: Any) -> Any:
        module = load(*args, **kwargs)
        loaded.append(weakref.ref(module))
        return module

    def progress(description: str, completed: float, total: float | None) -> None:
        if loaded:
            alive_at[description] = loaded[0]() is not None

    trimmed: list[bool] = []
    release = export_step.release_freed_memory

    def tracked_release() -> None:
        trimmed.append(loaded[0]() is None)  # after the torch model is gone
        release()

    monkeypatch.setattr(torch_modules, "load_torch_module", tracked_load)
    monkeypatch.setattr(export_step, "release_freed_memory", tracked_release)
    ctx = dataclasses.replace(step_context(tmp_path, inputs=DIGITS_INPUTS), progress=progress)
    export(Model(path=digits_cnn_torchscript, format=ModelFormat.torchscript), ExportConfig(), ctx)
    assert alive_at == {
        "export: tracing to ONNX": True,
        "export: checking the ONNX graph": False,
        "export: comparing ONNX Runtime's outputs with torch's": False,
    }
    # The freed memory goes back to the system (malloc_trim) once the torch model is gone.
    assert trimmed == [True]
