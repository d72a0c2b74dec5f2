"""Graph preparation before INT8: what CNNs exported like PyPI OCR models need first.

Models exported by paddle2onnx or older exporters (opset 11/12) carry their weights as
Constant nodes and take images of any height and width. ONNX Runtime's quantizers only
quantize a Conv or MatMul whose weight is an initializer, so such a model comes out of
static quantization with its convolutions untouched; and calibration, shape inference and
QDQ placement are simplest with every spatial dim known. So, in order:

- `fold_constant_weights`: Constant nodes become initializers (pure graph rewrite);
- `fix_input_dims`: dynamic dims of the inputs (the batch excepted) are set to those of the
  representative inputs, for quantization only;
- `restore_input_dims`: afterwards the quantized graph gets the original dims back and drops
  the inferred intermediate shapes, so it still takes any height and width (QDQ parameters
  do not depend on the spatial size).

Functions work on an in-memory onnx.ModelProto and change it in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

# Dims as graph inputs declare them: an int, or a name/None for a dynamic dim.
Dims = tuple[int | str | None, ...]


def fold_constant_weights(model: onnx.ModelProto) -> int:
    """Turn the main graph's Constant nodes into initializers; returns how many were folded.

    Constants that are also graph outputs stay nodes (an output must be produced by a node
    in older IR versions); subgraphs (If/Loop bodies) are left alone.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    outputs = {o.name for o in graph.output}
    kept = []
    folded = []
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            kept.append(node)
            continue
        if node.output[0] in outputs or len(node.attribute) != 1:
            kept.append(node)
            continue
        attribute = node.attribute[0]
        if attribute.name == "value":
            tensor = attribute.t
            tensor.name = node.output[0]
        elif attribute.name in ("value_float", "value_floats", "value_int", "value_ints"):
            import numpy as np

            value = helper.get_attribute_value(attribute)
            dtype = np.float32 if attribute.name.startswith("value_float") else np.int64
            tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype), node.output[0])
        else:  # sparse_value, strings: rare, and no quantizer wants them
            kept.append(node)
            continue
        folded.append(tensor)
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(folded)
        # IR < 4 requires every initializer to be a graph input as well.
        if model.ir_version < 4:
            model.ir_version = 4
    return len(folded)


def input_dims(model: onnx.ModelProto) -> dict[str, Dims]:
    """The declared dims of the graph inputs that are not initializers."""
    initializers = {t.name for t in model.graph.initializer}
    return {v.name: _dims(v) for v in model.graph.input if v.name not in initializers}


def graph_dims(model: onnx.ModelProto) -> dict[str, Dims]:
    """The declared dims of the graph's inputs (initializers excepted) and outputs."""
    return {**input_dims(model), **{v.name: _dims(v) for v in model.graph.output}}


def _dims(value: onnx.ValueInfoProto) -> Dims:
    return tuple(
        int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None)
        for d in value.type.tensor_type.shape.dim
    )


def fix_input_dims(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> dict[str, Dims]:
    """Set the dynamic non-batch dims of each input in `shapes` to the given sizes.

    Returns the inputs' and outputs' dims as they were, for `restore_input_dims`. The batch
    dim (0) stays dynamic. Fixed dims that disagree with `shapes` are left as they are (the
    data check reports it).
    """
    before = graph_dims(model)
    inputs = input_dims(model)
    for value in model.graph.input:
        shape = shapes.get(value.name)
        if shape is None or value.name not in inputs:
            continue
        dims = value.type.tensor_type.shape.dim
        for index, dim in enumerate(dims):
            if index == 0 or index >= len(shape) or dim.HasField("dim_value"):
                continue
            dim.Clear()
            dim.dim_value = int(shape[index])
    return before


def restore_input_dims(model: onnx.ModelProto, dims: Mapping[str, Dims]) -> None:
    """Give inputs and outputs back the dims `dims` records; drop inferred intermediate shapes.

    Shapes inferred while the dims were fixed would be wrong for other sizes; ONNX Runtime
    infers them again when it loads the model.
    """
    for value in [*model.graph.input, *model.graph.output]:
        original = dims.get(value.name)
        if original is None:
            continue
        tensor_dims = value.type.tensor_type.shape.dim
        for dim, want in zip(tensor_dims, original, strict=False):
            dim.Clear()
            if isinstance(want, int):
                dim.dim_value = want
            elif want:
                dim.dim_param = want
    del model.graph.value_info[:]


# Per-channel QDQ needs DequantizeLinear's `axis`, which opset 13 introduced.
PER_CHANNEL_OPSET = 13


def default_opset(model: onnx.ModelProto) -> int:
    """The model's version of the default ONNX domain."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def upgrade_opset(model: onnx.ModelProto, minimum: int = PER_CHANNEL_OPSET) -> onnx.ModelProto:
    """`model` converted to opset `minimum` when it is older (a new proto); else `model`.

    Opset 11/12 models (PyPI OCR packages) would otherwise get per-channel DequantizeLinear
    nodes that ONNX Runtime refuses to load ("Unrecognized attribute: axis").
    """
    if default_opset(model) >= minimum:
        return model
    from onnx import version_converter

    return version_converter.convert_version(model, minimum)


def name_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed main-graph node a unique name; returns how many were named.

    Quantizers select and exclude nodes by name, and exporters leave names empty.
    """
    taken = {n.name for n in model.graph.node if n.name}
    named = 0
    for index, node in enumerate(model.graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
        named += 1
    return named


def fold_conv_constant_weights(path: Path, *, large: bool) -> int:
    """Fold the Constant nodes of the model at `path` in place when a Conv takes its weight
    from one (opset-11/12 OCR models); returns how many were folded (0: file untouched).

    ONNX Runtime's quantizers stop on such a Conv ("Expected ... to be an initializer").
    """
    import onnx

    from kondense.runners.model import onnx_files

    graph = onnx.load_model(str(path), load_external_data=False).graph
    constants = {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
    if not any(
        n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in constants for n in graph.node
    ):
        return 0
    model = onnx.load_model(str(path), load_external_data=True)
    folded = fold_constant_weights(model)
    onnx_files.save_onnx(model, path, external=large)
    return folded
