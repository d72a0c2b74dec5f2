"""ONNX model files: validation (external data must stay inside the model's folder), saving
with weights beside the model when large, sizes and the tensors a model holds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat
from kondense.runners.model.formats import FIELD

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from kondense.runners.core import Model

# Weights beyond this go to one file beside the model (`<name>.data`), and the steps take their
# large-model paths (graph edits without the weights, tensor by tensor). protobuf cannot
# serialise a message over 2 GB; and below that, every read of the graph alone (shape
# inference, optimization, quantization's passes) would parse the weights too, so a 1.2 GB
# model with its weights inside peaked at 5.3x its bytes through export and dynamic INT8.
EXTERNAL_DATA_THRESHOLD = 256 << 20


def require_onnx(model: Model, step: str) -> None:
    """Refuse anything but a valid ONNX model for an ONNX-only step."""
    if model.module is not None or model.format is not ModelFormat.onnx:
        raise BadInput(
            f"{step} works on ONNX models; put an export step before {step}",
            field="spec.steps",
        )
    check_onnx(model.path)


def check_onnx(path: Path) -> None:
    """Validate the ONNX model at `path` (onnx.checker, by path so >2 GB models work).

    External-data locations must be relative paths inside the model's folder: absolute paths,
    `..` and symlinks that lead outside are refused with BadInput, as is a corrupt file.
    """
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as error:
        raise BadInput(
            f"{path.name} is not a readable ONNX model ({type(error).__name__}: {error}); "
            "re-export it or check the download",
            field=FIELD,
        ) from error
    check_external_data(model, path.parent)
    # The checker parses the file again: with the weights inside it, holding this parse too
    # would make the check cost 3x the model instead of 2x.
    del model
    try:
        onnx.checker.check_model(str(path))
    except Exception as error:
        raise BadInput(
            f"{path.name} fails the ONNX checker: {str(error).splitlines()[0]}; re-export it",
            field=FIELD,
        ) from error


def check_external_data(model: onnx.ModelProto, folder: Path) -> None:
    """Refuse external-data locations that leave `folder` (absolute, `..`, escaping symlinks)."""
    from onnx import TensorProto

    root = folder.resolve()
    for tensor in iter_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        where = f"external data of tensor {tensor.name!r}: location {location!r}"
        if not location or os.path.isabs(location) or Path(location).is_absolute():
            raise BadInput(f"{where} must be a relative path inside the model folder", field=FIELD)
        if ".." in Path(location).parts:
            raise BadInput(f"{where} leaves the model folder ('..'); refused", field=FIELD)
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise BadInput(
                f"{where} resolves outside the model folder (symlink); refused", field=FIELD
            )
        if not target.is_file():
            raise BadInput(f"{where} is missing; keep the data file beside the model", field=FIELD)


def iter_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of the model: initializers and node attributes, subgraphs included."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)


def onnx_size_bytes(path: Path) -> int:
    """Bytes of the model file plus the external-data files it refers to."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    files = {path.resolve()}
    for tensor in iter_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                files.add((path.parent / entry.value).resolve())
    return sum(f.stat().st_size for f in files if f.is_file())


def read_tensor(tensor: onnx.TensorProto, folder: Path) -> np.ndarray:
    """The values of `tensor`; external data is read from its file in `folder` into a copy of
    the tensor, so a model loaded without its weights never holds them all at once."""
    from onnx import TensorProto, numpy_helper

    if tensor.data_location != TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor)
    alone = TensorProto()
    alone.CopyFrom(tensor)
    return numpy_helper.to_array(alone, str(folder))


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of tensor data held inside the model proto (external data not counted)."""
    return sum(len(t.raw_data) + 4 * len(t.float_data) for t in iter_tensors(model))


def save_onnx(model: onnx.ModelProto, path: Path, *, external: bool | None = None) -> Path:
    """Save `model` at `path`; weights over EXTERNAL_DATA_THRESHOLD (or `external`) go to
    `<name>.data`."""
    import onnx

    if external is None:
        external = weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))
    return path


def external_data_files(path: Path) -> list[Path]:
    """The external-data files the ONNX model at `path` refers to."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    files = {
        (path.parent / entry.value).resolve()
        for tensor in iter_tensors(model)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(files)


def save_beside_data(model: onnx.ModelProto, source: Path, target: Path) -> Path:
    """Save `model`, loaded from `source` without its external data, at `target` with that
    data copied file to file beside it as `<target>.data`, `<target>.data.1`, ...: the
    weights never pass through memory.

    Copies, not hard links: ONNX refuses external data with several links (a "hardlink
    attack"), and its writers append to an existing `<name>.data`. In the source's own folder
    the model refers to the source's files as they are."""
    import shutil

    import onnx

    renamed: dict[str, str] = {}
    same_folder = target.parent.resolve() == source.parent.resolve()
    for tensor in [] if same_folder else iter_tensors(model):
        for entry in tensor.external_data:
            if entry.key != "location":
                continue
            if entry.value not in renamed:
                suffix = f".{len(renamed)}" if renamed else ""
                renamed[entry.value] = f"{target.name}.data{suffix}"
                shutil.copyfile(source.parent / entry.value, target.with_name(renamed[entry.value]))
            entry.value = renamed[entry.value]
    onnx.save_model(model, str(target))
    return target


def consolidate_external_data(path: Path) -> None:
    """Rewrite a model whose weights are spread over external files (torch's exporters write
    them), or sit inside it beyond EXTERNAL_DATA_THRESHOLD, so they are in one `<name>.data`
    file beside it, or inside the model when under the threshold; a small model with its
    weights inside is untouched."""
    import onnx

    alone = not any(f.is_file() and f != path for f in path.parent.iterdir())
    if alone and path.stat().st_size <= EXTERNAL_DATA_THRESHOLD:
        return  # weights inside and small: parsing them to look for external data costs 2x
    files = [] if alone else external_data_files(path)
    if not files and path.stat().st_size <= EXTERNAL_DATA_THRESHOLD:
        return
    model = onnx.load_model(str(path), load_external_data=True)
    for file in files:
        file.unlink(missing_ok=True)
    save_onnx(model, path)
