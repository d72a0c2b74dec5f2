"""Shape inference that costs the memory of a model's graph, not of its weights.

ONNX's `infer_shapes` and ONNX Runtime's symbolic shape inference both work on a full copy of
the model (serialised, parsed, returned), and ONNX Runtime's quantizers re-infer shapes by
deep-copying the model, saving it and loading it back: three copies of the weights at once,
which made INT8 of a 2.4 GB model peak at 10 GB. Here shapes are inferred on a skeleton that
has every tensor's name, type and dims but not the bytes of large ones, and the inferred
value_info is written back into the model itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

# Tensors up to this size keep their bytes in the skeleton: shape inference reads the values
# of small constants (Reshape shapes, Slice bounds), never those of weights.
SMALL_TENSOR_BYTES = 1024


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` without the bytes of its large initializers (their name, type and dims kept)."""
    import onnx

    graph = model.graph
    light_graph = onnx.GraphProto(
        name=graph.name,
        node=graph.node,
        input=graph.input,
        output=graph.output,
        value_info=graph.value_info,
        sparse_initializer=graph.sparse_initializer,
        initializer=[_bare(t) for t in graph.initializer],
    )
    return onnx.ModelProto(
        ir_version=model.ir_version,
        opset_import=model.opset_import,
        functions=model.functions,
        domain=model.domain,
        graph=light_graph,
    )


def _bare(tensor: onnx.TensorProto) -> onnx.TensorProto:
    import onnx

    if tensor.ByteSize() <= SMALL_TENSOR_BYTES:
        return tensor
    return onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)


def infer_shapes(model: onnx.ModelProto, *, symbolic: bool) -> None:
    """Infer the shapes of `model`'s tensors on its skeleton and write them into `model`
    (graph value_info and outputs): ONNX Runtime's symbolic inference when `symbolic`, which
    knows transformer shapes, else ONNX's. Raises what the inference raises."""
    import onnx

    light = skeleton(model)
    if symbolic:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(light)
        inferred = onnx.shape_inference.infer_shapes(inferred)
    else:
        inferred = onnx.shape_inference.infer_shapes(light)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)


def _reinfer_in_place(model: onnx.ModelProto) -> onnx.ModelProto:
    """What ONNX Runtime's `save_and_reload_model_with_shape_infer` gives, without the copies."""
    from onnxruntime.quantization.quant_utils import add_infer_metadata

    infer_shapes(model, symbolic=False)
    add_infer_metadata(model)
    return model


def _load_graph_with_shapes(path: Path) -> onnx.ModelProto:
    """What ONNX Runtime's `load_model_with_shape_infer` gives, without the weights' bytes."""
    import onnx

    return _reinfer_in_place(onnx.load_model(str(path), load_external_data=False))


@contextlib.contextmanager
def _replaced(modules: Sequence[ModuleType], name: str, replacement: object) -> Iterator[None]:
    found = [m for m in modules if hasattr(m, name)]
    originals = [getattr(m, name) for m in found]
    for module in found:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        for module, original in zip(found, originals, strict=True):
            setattr(module, name, original)


def quantizer_reloads_in_place() -> contextlib.AbstractContextManager[None]:
    """While inside, ONNX Runtime's quantizers re-infer shapes on the model they hold instead
    of saving and reloading a deep copy of it (see the module docstring)."""
    from onnxruntime.quantization import base_quantizer, onnx_quantizer, quant_utils

    return _replaced(
        [quant_utils, base_quantizer, onnx_quantizer],
        "save_and_reload_model_with_shape_infer",
        _reinfer_in_place,
    )


def calibrator_loads_graph_only() -> contextlib.AbstractContextManager[None]:
    """While inside, ONNX Runtime's calibrators load the model without its external data: they
    only add outputs to the graph and save it, and their session reads the weights from
    their file. The augmented model must be saved beside the model for that."""
    from onnxruntime.quantization import calibrate

    return _replaced([calibrate], "load_model_with_shape_infer", _load_graph_with_shapes)
