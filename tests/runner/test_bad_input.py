"""Bad input ends with a non-zero exit, a message naming the cause, and no report of success."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from fixtures.models import build_tiny_onnx
from runner.manifests import manifest, write_manifest
from typer.testing import CliRunner

from kondense.runners.cli import app

runner = CliRunner()
DYNAMIC = [{"quantize": {"mode": "dynamic"}}]


class WritesMarker:
    """Unpickling this creates a file: proof that a loader ran pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def run_expecting_failure(
    tmp_path: Path,
    model_uri: str | Path,
    steps: list[dict[str, object]] = DYNAMIC,
    **kwargs: object,
) -> str:
    document = manifest(model_uri, steps, tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    log = tmp_path / "termination-log"
    result = runner.invoke(
        app,
        [
            "run",
            str(write_manifest(tmp_path / "job.yaml", document)),
            "--termination-log",
            str(log),
        ],
    )
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists(), "bad input must publish nothing"
    outcome = json.loads(log.read_text())
    assert outcome["succeeded"] is False and outcome["reason"] == "BadInput"
    return result.output


def test_missing_model_names_the_path(tmp_path: Path) -> None:
    output = run_expecting_failure(tmp_path, tmp_path / "absent.onnx")
    assert "absent.onnx" in output and "no such file" in output


def test_corrupt_onnx_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(build_tiny_onnx(tmp_path / "good.onnx").read_bytes()[:200])
    output = run_expecting_failure(tmp_path, model)
    assert "model.onnx" in output and "ONNX" in output


def test_unknown_format_names_the_formats_kondense_reads(tmp_path: Path) -> None:
    model = tmp_path / "model.weights"
    model.write_bytes(b"\x00\x01 some binary blob that is no model")
    output = run_expecting_failure(tmp_path, model)
    assert "model.weights" in output and "ONNX" in output and "safetensors" in output


@pytest.mark.parametrize("name", ["model.pt", "pytorch_model.bin"])
def test_pickled_checkpoint_is_refused_without_unpickling(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "unpickled"
    model = tmp_path / name
    model.write_bytes(pickle.dumps({"weight": WritesMarker(marker)}))
    output = run_expecting_failure(tmp_path, model)
    assert "pickled" in output and "safetensors" in output
    assert not marker.exists(), "the checkpoint was unpickled"


def test_torch_save_archive_in_a_model_folder_is_refused_without_unpickling(
    tmp_path: Path,
) -> None:
    import torch

    marker = tmp_path / "unpickled"
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    torch.save({"weight": WritesMarker(marker)}, folder / "pytorch_model.bin")
    output = run_expecting_failure(tmp_path, folder)
    assert "pickled" in output and "pytorch_model.bin" in output
    assert not marker.exists()


def test_external_data_leaving_the_model_folder_is_refused(tmp_path: Path) -> None:
    import onnx

    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    model = onnx.load(str(build_tiny_onnx(tmp_path / "tiny.onnx")))
    onnx.save(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    (folder / "weights.bin").rename(secret)
    reloaded = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in reloaded.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
    onnx.save(reloaded, str(folder / "model.onnx"))
    output = run_expecting_failure(tmp_path, folder / "model.onnx")
    assert "../secret.bin" in output and "model folder" in output


def test_static_int8_without_calibration_is_refused_naming_the_field(tiny_onnx: Path) -> None:
    output = run_expecting_failure(tiny_onnx.parent, tiny_onnx, [{"quantize": {"mode": "static"}}])
    assert "spec.data.calibration" in output


def test_evaluation_arrays_not_matching_the_inputs_are_refused(tiny_onnx: Path) -> None:
    data = tiny_onnx.parent / "eval.npz"
    np.savez(data, images=np.zeros((4, 16), np.float32))
    output = run_expecting_failure(
        tiny_onnx.parent, tiny_onnx, data={"evaluation": {"uri": str(data)}}
    )
    assert "eval.npz" in output and "images" in output and "'x'" in output


def test_evaluation_arrays_of_the_wrong_shape_are_refused(tiny_onnx: Path) -> None:
    data = tiny_onnx.parent / "eval.npz"
    np.savez(data, x=np.zeros((4, 12), np.float32))
    output = run_expecting_failure(
        tiny_onnx.parent, tiny_onnx, data={"evaluation": {"uri": str(data)}}
    )
    assert "eval.npz" in output and "x has shape [1, 12]" in output and "16]" in output


def test_declared_format_contradicting_the_file_is_refused(tiny_onnx: Path) -> None:
    document_model = {"format": "torchscript"}
    tmp = tiny_onnx.parent
    doc = manifest(tiny_onnx, DYNAMIC, tmp / "out")
    doc["spec"]["model"].update(document_model)
    result = runner.invoke(app, ["run", str(write_manifest(tmp / "job.yaml", doc))])
    assert result.exit_code == 2
    assert "spec.model.format" in result.output and "onnx" in result.output


def test_calibration_arrays_not_matching_are_refused_before_any_step(tiny_onnx: Path) -> None:
    data = tiny_onnx.parent / "calibration.npz"
    np.savez(data, pixel_values=np.zeros((4, 16), np.float32))
    output = run_expecting_failure(
        tiny_onnx.parent,
        tiny_onnx,
        [{"quantize": {"mode": "static"}}],
        data={"calibration": {"uri": str(data)}},
    )
    assert "calibration.npz" in output and "pixel_values" in output and "'x'" in output
    assert "step 1/1" not in output
