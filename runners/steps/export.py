"""export: a PyTorch model (Hugging Face directory, TorchScript, torch.export .pt2 or an in-memory
module from prune/distill) becomes ONNX with dynamic batch and sequence axes.

ONNX input passes through after validation. The exported graph is run once with ONNX Runtime
and compared with torch on the tracing inputs, so a silently wrong export fails here and not
at evaluation.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kondense.api.errors import BadInput, KondenseError
from kondense.api.spec import Data, ExportConfig, ModelFormat
from kondense.runners.core import Model, StepContext
from kondense.runners.memory_budget import release_freed_memory
from kondense.runners.model import MODEL_FILE, onnx_files, torch_modules
from kondense.runners.model.assets import copy_assets, hf_assets_dir, tokenizer_dir

if TYPE_CHECKING:
    import torch

# Outputs may differ from torch by float rounding only; anything larger means a wrong graph.
TOLERANCE = 1e-3


def run(model: Model, config: ExportConfig, ctx: StepContext) -> Model:
    """`model` as ONNX in ctx.workdir/model.onnx (assets copied beside it in ctx.workdir/assets)."""
    if model.module is None and model.format is ModelFormat.onnx:
        onnx_files.check_onnx(model.path)
        return model
    import torch

    task = ctx.task
    ctx.progress("export: loading the PyTorch model", 0, 4)
    program = None
    if model.module is None and model.format is ModelFormat.exported_program:
        program = torch_modules.load_exported_program(model.path)
    module = (
        program.module() if program is not None else torch_modules.load_torch_module(model, task)
    )
    assets = copy_assets(ctx.workdir / "assets", model)
    input_names = torch_modules.module_signature(module, ctx.inputs)
    tokenizer = tokenizer_dir(hf_assets_dir(model))
    examples = program.example_inputs[0] if program is not None else None
    if examples is None and not ctx.inputs and tokenizer is None:
        examples = examples_from_data(ctx.data, input_names, ctx.sequence_length)
    inputs = torch_modules.example_inputs(
        input_names, declared=ctx.inputs, tokenizer_dir=tokenizer, examples=examples
    )
    if config.dynamic_axes:
        inputs = tuple(_at_least_two(t) for t in inputs)
    with torch.no_grad():
        expected = _as_tuple(module(*inputs))
    output_names = list(getattr(module, "output_names", None) or [])
    if len(output_names) != len(expected):
        output_names = (
            ["output"] if len(expected) == 1 else [f"output_{i}" for i in range(len(expected))]
        )

    target = ctx.workdir / MODEL_FILE
    ctx.progress("export: tracing to ONNX", 1, 4)
    export_onnx(
        program if program is not None else module,
        inputs,
        target,
        input_names=input_names,
        output_names=output_names,
        opset=config.opset,
        dynamic_axes=_dynamic_axes(inputs, expected, input_names, output_names)
        if config.dynamic_axes
        else None,
    )
    # The torch weights are no longer needed (the outputs to compare with are in `expected`):
    # dropped here, the checks and the ONNX Runtime session below hold only the ONNX model.
    # A module handed in by an earlier step stays alive with that step's Model.
    del module, program
    gc.collect()
    release_freed_memory()
    ctx.progress("export: checking the ONNX graph", 2, 4)
    onnx_files.check_onnx(target)
    ctx.progress("export: comparing ONNX Runtime's outputs with torch's", 3, 4)
    difference = max_difference(target, input_names, inputs, expected)
    ctx.report("exportMaxAbsDiff", difference)
    return model.with_(
        path=target,
        format=ModelFormat.onnx,
        module=None,
        assets=assets,
    )


def examples_from_data(
    data: Data, input_names: Sequence[str], sequence_length: int
) -> tuple[torch.Tensor, ...] | None:
    """Two samples of the job's own .npz data (evaluation, calibration or training, the first
    whose arrays are named like the inputs) to trace a model whose inputs are not declared,
    such as a network built from safetensors weights; None when no data fits."""
    import torch

    from kondense.runners.io.data import iter_batches

    for source in (data.evaluation, data.calibration, data.training):
        if source is None or not source.uri.endswith(".npz"):
            continue
        try:
            batches = iter_batches(
                source,
                input_names=input_names,
                tokenizer_dir=None,
                batch_size=2,
                sequence_length=sequence_length,
            )
            batch = next(iter(batches), None)
        except BadInput:  # arrays named otherwise: the next source may fit
            continue
        if batch is not None and all(name in batch.inputs for name in input_names):
            return tuple(torch.from_numpy(batch.inputs[name]) for name in input_names)
    return None


def export_onnx(
    module: torch.nn.Module | torch.export.ExportedProgram,
    inputs: tuple[torch.Tensor, ...],
    target: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int,
    dynamic_axes: dict[str, dict[int, str]] | None,
) -> None:
    """Trace `module` to ONNX at `target` (external data beside it for models over 2 GB)."""
    import torch

    # The TorchScript-based exporter (dynamo=False) is the one used here. Measured on this torch
    # (2.15) with MiniLM: it exports in 2 s, honours opset 17, matches torch to 2e-7 and gives
    # the graph shape ONNX Runtime's BERT fusion recognises; the dynamo exporter took 9 s,
    # could not down-convert to opset 17 and needs per-argument dynamic_shapes that *args
    # wrappers make awkward. torch.export programs (.pt2) cannot be re-traced that way (their
    # modules refuse .eval()); they are already graphs and go through the dynamo exporter, which
    # keeps their dynamic dimensions.
    program = isinstance(module, torch.export.ExportedProgram)
    exporter: dict[str, Any] = (
        {"dynamo": True}
        if program
        else {"dynamic_axes": dynamic_axes, "do_constant_folding": True, "dynamo": False}
    )
    try:
        torch.onnx.export(
            module,
            inputs,
            str(target),
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            **exporter,
        )
    except Exception as error:
        raise KondenseError(
            f"ONNX export failed: {type(error).__name__}: {str(error).splitlines()[0]}"
        ) from error
    onnx_files.consolidate_external_data(target)
    if program:
        name_dynamic_dims(target)


def name_dynamic_dims(path: Path) -> None:
    """Rename the dynamo exporter's symbolic dims (s0, s99) after the inputs' axes: the first
    is `batch`, the second of an integer [batch, n] input is `sequence`."""
    import onnx
    from onnx import TensorProto

    model = onnx.load_model(str(path), load_external_data=False)
    names: dict[str, str] = {}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        dims = tensor.shape.dim
        for axis, dim in enumerate(dims):
            if dim.dim_param and dim.dim_param not in names:
                if axis == 0:
                    names[dim.dim_param] = "batch"
                elif axis == 1 and len(dims) == 2 and tensor.elem_type == TensorProto.INT64:
                    names[dim.dim_param] = "sequence"
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    onnx.save_model(model, str(path))


def max_difference(
    path: Path,
    input_names: Sequence[str],
    inputs: tuple[torch.Tensor, ...],
    expected: tuple[torch.Tensor, ...],
) -> float:
    """Largest absolute difference between ONNX Runtime and torch; raises when beyond tolerance."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    accepted = {i.name for i in session.get_inputs()}
    # Inputs the trace found unused (e.g. token_type_ids of some models) are dropped by export.
    feeds = {n: t.numpy() for n, t in zip(input_names, inputs, strict=True) if n in accepted}
    actual = session.run(None, feeds)
    worst = 0.0
    for got, want in zip(actual, expected, strict=True):
        reference = want.detach().float().numpy()
        scale = max(1.0, float(np.abs(reference).max()))
        difference = float(np.abs(np.asarray(got, dtype=np.float32) - reference).max())
        worst = max(worst, difference)
        if difference > TOLERANCE * scale:
            raise KondenseError(
                f"the exported ONNX model differs from the PyTorch model by {difference:.3g} "
                f"(tolerance {TOLERANCE * scale:.3g}); the model has behaviour ONNX tracing "
                "cannot capture (data-dependent control flow?)"
            )
    return worst


def _as_tuple(output: Any) -> tuple[torch.Tensor, ...]:
    import torch

    if isinstance(output, torch.Tensor):
        return (output,)
    if isinstance(output, dict):
        return tuple(v for v in output.values() if isinstance(v, torch.Tensor))
    return tuple(v for v in output if isinstance(v, torch.Tensor))


def _at_least_two(tensor: torch.Tensor) -> torch.Tensor:
    # A batch of one lets the tracer treat the batch size as a constant; trace with two.
    if tensor.dim() >= 1 and tensor.shape[0] == 1:
        return tensor.repeat(2, *([1] * (tensor.dim() - 1)))
    return tensor


def _dynamic_axes(
    inputs: tuple[torch.Tensor, ...],
    outputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> dict[str, dict[int, str]]:
    """Batch is dynamic everywhere; sequence too for token inputs (integer [batch, sequence])."""
    text = any(not t.is_floating_point() and t.dim() == 2 for t in inputs)
    axes: dict[str, dict[int, str]] = {}
    for name, tensor in zip(input_names, inputs, strict=True):
        axes[name] = {0: "batch"}
        if text and not tensor.is_floating_point() and tensor.dim() == 2:
            axes[name][1] = "sequence"
    for name, tensor in zip(output_names, outputs, strict=True):
        axes[name] = {0: "batch"}
        if text and tensor.dim() == 3:  # token-level outputs, e.g. last_hidden_state
            axes[name][1] = "sequence"
    return axes
