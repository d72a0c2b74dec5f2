"""Per-operator INT8 sensitivity: what quantizing each weighted op costs, measured in one pass.

The quantized model is run once over the tuning batches with every weighted op's input and
output exposed; the float op is then run on the same inputs (`reference_model`), so each op's
relative output error is its own quantization error (weights, run-time activation scale and
this CPU's kernel, saturation included), not the error it inherits from ops before it.
Leave-one-out re-quantization would cost one quantization and evaluation per op (MiniLM has
37: minutes on two cores); this is one run, and the quantize step confirms end to end, on the
same data, that keeping the top-ranked ops in float is worth it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kondense.runners.core import Progress, no_progress
from kondense.runners.io.data import Batch
from kondense.runners.progress import counted

if TYPE_CHECKING:
    import onnx

REFERENCE_SUFFIX = "::float"
# The float ops are run in groups of at most this many weight bytes, one group's session open
# at a time, so a large model's float weights are never all resident beside its INT8 session;
# each group costs one more INT8 run over the tuning batches.
REFERENCE_GROUP_BYTES = 256 * 2**20
# Which input holds the weight, for the op types dynamic INT8 quantizes unfused. A Gather of
# a constant index from a run-time tensor (shape arithmetic) is not weighted.
WEIGHT_INPUT = {"MatMul": 1, "Gather": 0, "Conv": 1}


@dataclass(frozen=True)
class WeightedOp:
    """A node with a constant weight: its name, type, run-time inputs, first output and the
    weight's initializer."""

    name: str
    op_type: str
    activations: tuple[str, ...]
    output: str
    weight: str


def weighted_ops(model: onnx.ModelProto, op_types: Sequence[str]) -> list[WeightedOp]:
    """Named nodes of `op_types` whose weight input (WEIGHT_INPUT) is a float initializer."""
    import onnx

    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    found = []
    for node in model.graph.node:
        index = WEIGHT_INPUT.get(node.op_type)
        if node.op_type not in op_types or index is None or not node.name:
            continue
        if len(node.input) <= index or node.input[index] not in floats:
            continue
        activations = tuple(i for i in node.input if i and i not in floats)
        if activations:
            weight = node.input[index]
            found.append(WeightedOp(node.name, node.op_type, activations, node.output[0], weight))
    return found


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    values = [*graph.input, *graph.output, *graph.value_info]
    return {v.name: v.type.tensor_type.elem_type for v in values if v.type.tensor_type.elem_type}


def weight_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Each initializer's bytes, from its dims (its data may be on disk)."""
    from onnx import helper

    return {
        t.name: int(np.prod(t.dims, dtype=np.int64))
        * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        for t in model.graph.initializer
    }


def groups(ops: Sequence[WeightedOp], sizes: Sequence[int], limit: int) -> list[list[WeightedOp]]:
    """`ops` in order, cut into groups whose `sizes` sum to at most `limit` (an op larger than
    `limit` is a group of its own)."""
    found: list[list[WeightedOp]] = []
    total = limit + 1
    for op, size in zip(ops, sizes, strict=True):
        if total + size > limit:
            found.append([])
            total = 0
        found[-1].append(op)
        total += size
    return found


def reference_model(model: onnx.ModelProto, ops: Sequence[WeightedOp]) -> onnx.ModelProto:
    """A graph of just the float `ops`, each fed by graph inputs named like its activations;
    outputs are named `<output>::float`."""
    import onnx
    from onnx import helper

    wanted = {op.name for op in ops}
    nodes = []
    for node in model.graph.node:
        if node.name in wanted:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            del copy.output[:]
            copy.output.extend([node.output[0] + REFERENCE_SUFFIX, *node.output[1:]])
            nodes.append(copy)
    used = {i for n in nodes for i in n.input}
    types = _elem_types(model)
    activations = sorted({a for op in ops for a in op.activations})
    graph = helper.make_graph(
        nodes,
        "int8_sensitivity_reference",
        [
            helper.make_tensor_value_info(a, types.get(a, onnx.TensorProto.FLOAT), None)
            for a in activations
        ],
        [
            helper.make_tensor_value_info(
                op.output + REFERENCE_SUFFIX, types.get(op.output, onnx.TensorProto.FLOAT), None
            )
            for op in ops
        ],
        initializer=[t for t in model.graph.initializer if t.name in used],
    )
    reference = helper.make_model(graph, opset_imports=model.opset_import)
    reference.ir_version = model.ir_version
    return reference


def exposing(
    quantized: onnx.ModelProto, names: Sequence[str], types: dict[str, int]
) -> onnx.ModelProto:
    """`quantized` with the tensors `names` it computes added as graph outputs (in place)."""
    import onnx
    from onnx import helper

    produced = {o for n in quantized.graph.node for o in n.output}
    produced |= {i.name for i in quantized.graph.input}
    present = {o.name for o in quantized.graph.output}
    for name in names:
        if name in produced and name not in present:
            elem = types.get(name, onnx.TensorProto.FLOAT)
            quantized.graph.output.append(helper.make_tensor_value_info(name, elem, None))
            present.add(name)
    return quantized


def op_errors(
    float_path: Path,
    quantized_path: Path,
    batches: Sequence[Batch],
    ops: Sequence[WeightedOp],
    workdir: Path,
    *,
    threads: int,
    progress: Progress = no_progress,
    group_bytes: int = REFERENCE_GROUP_BYTES,
) -> dict[str, float]:
    """Relative L2 error of each op's INT8 output against the float op on the same inputs,
    over `batches` (each batch done reported to `progress`). The float ops run in groups of at
    most `group_bytes` of weights, one group at a time. Ops the quantizer renamed away (their
    tensors are gone) are left out."""
    import onnx

    from kondense.runners.measure.inference import CPU, Device, feed, open_session
    from kondense.runners.model import onnx_files

    device = Device("cpu", CPU)
    # Graphs only: the models written here read the weights from the sources' files.
    float_model = onnx.load_model(str(float_path), load_external_data=False)
    types = _elem_types(float_model)
    quantized = onnx.load_model(str(quantized_path), load_external_data=False)
    produced = {o for n in quantized.graph.node for o in n.output} | {
        i.name for i in quantized.graph.input
    }
    ops = [op for op in ops if op.output in produced and set(op.activations) <= produced]
    if not ops:
        return {}
    exposed_path = onnx_files.save_beside_data(
        exposing(quantized, [t for op in ops for t in (*op.activations, op.output)], types),
        quantized_path,
        workdir / "sensitivity-exposed.onnx",
    )
    del quantized
    sizes = weight_bytes(float_model)
    parts = groups(ops, [sizes[op.weight] for op in ops], group_bytes)
    reference_paths = [
        onnx_files.save_beside_data(
            reference_model(float_model, part),
            float_path,
            workdir / f"sensitivity-reference-{index}.onnx",
        )
        for index, part in enumerate(parts)
    ]
    del float_model
    exposed = open_session(exposed_path, threads=threads, device=device)
    squared_error = dict.fromkeys((op.name for op in ops), 0.0)
    squared_norm = dict.fromkeys((op.name for op in ops), 0.0)
    stage = f"quantize: INT8 error of {len(ops)} ops, tuning batches"
    rounds = (
        (part, path, batch)
        for part, path in zip(parts, reference_paths, strict=True)
        for batch in batches
    )
    session, session_path = None, None
    for part, path, batch in counted(rounds, progress, stage, len(parts) * len(batches)):
        if session is None or path != session_path:
            session = None  # the previous group's weights are freed before the next load
            session, session_path = open_session(path, threads=threads, device=device), path
        names = sorted({t for op in part for t in (*op.activations, op.output)})
        values = dict(zip(names, exposed.run(names, feed(exposed, batch.inputs)), strict=True))
        wanted = {i.name for i in session.get_inputs()}
        floats = session.run(
            [op.output + REFERENCE_SUFFIX for op in part],
            {k: v for k, v in values.items() if k in wanted},
        )
        for op, want in zip(part, floats, strict=True):
            got = values[op.output].astype(np.float64)
            want = want.astype(np.float64)
            squared_error[op.name] += float(np.sum((got - want) ** 2))
            squared_norm[op.name] += float(np.sum(want**2))
    del session, exposed
    for path in (exposed_path, *reference_paths):
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".data").unlink(missing_ok=True)
    return {
        name: float(np.sqrt(squared_error[name] / squared_norm[name]))
        if squared_norm[name]
        else 0.0
        for name in squared_error
    }


def ranked(errors: dict[str, float]) -> list[tuple[str, float]]:
    """Ops by error, largest first."""
    return sorted(errors.items(), key=lambda item: item[1], reverse=True)
