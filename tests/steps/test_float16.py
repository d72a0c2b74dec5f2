"""FP16 tensor by tensor (runners/model/float16.py) gives what ONNX Runtime's float16 converter
gives on the whole model: the same graph, the same weight bytes, the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures.models import run_onnx
from onnx import TensorProto, helper, numpy_helper

from kondense.api.spec import QuantizeConfig, QuantizeMode
from kondense.runners.core import no_progress
from kondense.runners.model import onnx_files
from kondense.runners.model.float16 import convert_to_float16
from kondense.runners.steps.quantize import fp16_block_list

HIDDEN = 64
# fc2 is blocked alone; fc5 shares w1 with the converted fc1 and fc4, so w1 turns float16 and
# a Cast back to float32 goes before fc5.
BLOCKED_NODES = ["fc2", "fc5"]


def _matmul(a: str, b: str, out: str) -> onnx.NodeProto:
    return helper.make_node("MatMul", [a, b], [out], name=out)


def build_mixed_model(path: Path, *, external: bool) -> Path:
    """A graph with what the converter decides on: a blocked op (Softmax), blocked nodes, a
    weight shared by float16 and float32 nodes, shape constants, a Constant node's tensor, a
    small bias, and weights beyond float16's range (clamped)."""
    rng = np.random.default_rng(0)

    def weight(name: str) -> onnx.TensorProto:
        values = rng.normal(0, 0.2, (HIDDEN, HIDDEN)).astype(np.float32)
        return numpy_helper.from_array(values, name)

    w1 = numpy_helper.to_array(weight("w1")).copy()
    w1[0, 0], w1[0, 1], w1[1, 0] = 1e6, 1e-9, -1e-9  # clamped to float16's range
    constant = rng.normal(0, 0.2, (HIDDEN, HIDDEN)).astype(np.float32)
    nodes = [
        _matmul("x", "w1", "fc1"),
        helper.make_node("Add", ["fc1", "b1"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["h1"], name="relu1"),
        helper.make_node("Reshape", ["h1", "rows"], ["r1"], name="reshape1"),
        helper.make_node("Softmax", ["r1"], ["s1"], name="softmax1", axis=-1),
        helper.make_node("Reshape", ["s1", "flat"], ["f1"], name="reshape2"),
        _matmul("f1", "w2", "fc2"),
        helper.make_node(
            "Constant", [], ["c"], name="const", value=numpy_helper.from_array(constant, "c")
        ),
        _matmul("fc2", "c", "fc3"),
        _matmul("fc3", "w1", "fc4"),
        _matmul("fc3", "w1", "fc5"),
        helper.make_node("Add", ["fc4", "fc5"], ["y"], name="add2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", HIDDEN])],
        [
            numpy_helper.from_array(w1, "w1"),
            weight("w2"),
            numpy_helper.from_array(rng.normal(0, 0.1, HIDDEN).astype(np.float32), "b1"),
            numpy_helper.from_array(np.array([-1, 8, 8], dtype=np.int64), "rows"),
            numpy_helper.from_array(np.array([-1, HIDDEN], dtype=np.int64), "flat"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        # Every tensor in the file, shape constants included (read back for shape inference).
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            location=path.name + ".data",
            size_threshold=0,
        )
    else:
        onnx.save_model(model, str(path))
    return path


def _reference(source: Path, block_list: list[str]) -> onnx.ModelProto:
    """ONNX Runtime's converter on the whole model in memory, as convert_fp16 called it."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = convert_float_to_float16(
        onnx.load(str(source)),
        keep_io_types=True,
        op_block_list=block_list,
        node_block_list=BLOCKED_NODES,
    )
    wrapped = OnnxModel(converted)
    wrapped.topological_sort()
    return wrapped.model


def _normalized(model: onnx.ModelProto) -> bytes:
    """The graph's bytes, tensors' data location spelled out (in memory either way)."""
    for tensor in onnx_files.iter_tensors(model):
        tensor.data_location = TensorProto.DEFAULT
    return model.graph.SerializeToString(deterministic=True)


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_fp16_by_tensor_matches_onnx_runtimes_converter(tmp_path: Path, external: bool) -> None:
    source = build_mixed_model(tmp_path / "source" / "model.onnx", external=external)
    block_list = fp16_block_list(QuantizeConfig(mode=QuantizeMode.fp16))
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    convert_to_float16(
        source,
        target,
        keep_io_types=True,
        op_block_list=block_list,
        node_block_list=BLOCKED_NODES,
        progress=no_progress,
        description="fp16",
    )
    onnx_files.check_onnx(target)
    assert bool(onnx_files.external_data_files(target)) == external
    want = _reference(source, block_list)
    got = onnx.load(str(target))
    # The converter's decisions are all there: w1 float16 with a Cast before fc5, w2 float32.
    types = {t.name: t.data_type for t in got.graph.initializer}
    assert types["w1"] == TensorProto.FLOAT16 and types["w2"] == TensorProto.FLOAT
    assert "w1_cast_to_fp32" in {i for n in got.graph.node if n.name == "fc5" for i in n.input}
    assert _normalized(got) == _normalized(want)
    x = np.random.default_rng(1).normal(0, 1, (4, HIDDEN)).astype(np.float32)
    reference = tmp_path / "reference.onnx"
    onnx.save_model(want, str(reference))
    np.testing.assert_array_equal(run_onnx(target, {"x": x}), run_onnx(reference, {"x": x}))


def test_fp16_by_tensor_reports_each_float_weight(tmp_path: Path) -> None:
    source = build_mixed_model(tmp_path / "model.onnx", external=True)
    seen: list[tuple[float, float | None]] = []
    convert_to_float16(
        source,
        tmp_path / "fp16.onnx",
        keep_io_types=True,
        op_block_list=[],
        node_block_list=[],
        progress=lambda _, done, total: seen.append((done, total)),
        description="fp16",
    )
    # w1, w2 and the Constant's tensor; the bias and the shape constants are under 1 KiB.
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
