"""quantize mode auto: INT8 chosen per operator type by measuring it on the CPU the job runs on.

What each kind of weighted operator gets, and why:

- MatMul/Gemm with constant weights, Attention, EmbedLayerNormalization (transformers):
  dynamic INT8, no data needed; it is what makes MiniLM 1.7x faster on AVX512-VNNI.
- Conv: static INT8 in QDQ form, per-channel weights, activations calibrated on
  `spec.data.calibration` or, without it, on the built-in set that fits the inputs (its
  `tune` split, never the one results are evaluated on). Dynamic INT8 turns a Conv into
  ConvInteger, which ran 4-6x slower than FP32 on OCR detectors and recognizers (#10; 5x on
  the project's text detector), so it is never tried. Without representative inputs (only
  synthetic random ones fit) the convolutions stay float: activation ranges calibrated on
  noise clip real images. The stem conv that reads the image stays float (FIRST_CONV_FLOAT).
  Regular and depthwise convolutions are candidates alone and together: on a MobileNet-style
  net the regular ones alone ran 0.1-0.8x (a dequantize/quantize pair around every float
  depthwise conv) while all convs together ran 1.1-1.3x.
- Gather (embedding tables): dynamic INT8 for size; kept unless it measures slower.

Preparation first (runners/int8/prepare.py): Constant weights folded into initializers,
opset raised to 13 for per-channel QDQ, input dims fixed to the calibration inputs' and
given back afterwards (the result still takes any image size).

Each candidate is quantized alone, timed against the prepared float model (interleaved,
batch 1, the job's CPU threads, median of repeats) and run on the calibration batches. It
stays INT8 only when it is KEEP_MIN_SPEEDUP faster (on a shared machine a 2% "win" is noise)
and its outputs agree with float's at MIN_AGREEMENT (top-1 for classifier logits, cosine
for embeddings and maps).
The kept candidates are combined, checked again (autoTuneAgreement) and timed against the
model as it came in (autoSpeedup). The job's own evaluation and gates then judge the result
on held-out data.

When no candidate passes, the step refuses (ResultRejected, exit 3) with every candidate's
measured speed and agreement rather than hand on the float model: a job whose quantize step
made nothing faster must not report INT8, nor silently ship an unchanged model. Force
`mode: static` or `mode: dynamic` to get INT8 regardless.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kondense.api.errors import BadInput, ResultRejected
from kondense.api.spec import CalibrationMethod, QuantizeConfig, Task, TensorSpec
from kondense.runners.core import Model, Progress, StepContext, no_progress
from kondense.runners.int8 import prepare
from kondense.runners.model import MODEL_FILE, onnx_files
from kondense.runners.model.assets import tokenizer_dir
from kondense.runners.progress import counted

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from kondense.runners.io.data import Batch, InputSignature

log = logging.getLogger(__name__)

Method = Literal["static", "dynamic"]

# A compute candidate stays INT8 only when this much faster than float (p50, interleaved).
KEEP_MIN_SPEEDUP = 1.05
# A candidate stays INT8 only when its outputs agree with float's this much on the
# calibration batches (top-1 for classifier logits, cosine otherwise): the #10 target.
MIN_AGREEMENT = 0.99
# A size-only candidate (embedding Gather) stays INT8 unless clearly slower than this. A
# gather reads rows either way, so its INT8 time is float's within timing noise (up to 12%
# between two timings of one kernel on a loaded 2-core machine); a 0.95 bound dropped MiniLM's
# word embeddings to float on noise alone, leaving it 1.5x smaller instead of 3.9x.
SIZE_ONLY_MIN_SPEEDUP = 0.8
# Timed runs per model (over all repeats) and untimed warm-up runs, batch 1.
MEASURE_RUNS = 60
MEASURE_REPEATS = 3
MEASURE_WARMUP = 3
# Calibration samples auto reads at most (in memory: CNN inputs are large).
AUTO_CALIBRATION_SAMPLES = 256
CALIBRATION_BATCH = 16
# Ops dynamic INT8 quantizes in transformer graphs, each its own candidate.
DYNAMIC_CANDIDATES = ("MatMul", "Attention", "EmbedLayerNormalization", "Gather")
SIZE_ONLY = ("Gather",)
# Ops static QDQ quantizes alongside the convolutions so that INT8 flows between them
# (ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv and drops Relu/Clip before a Q).
# GlobalAveragePool and Gemm are left out: quantizing the pooled features of a classifier
# took its argmax agreement from 0.94 to 0.78 for no measurable speed.
STATIC_FLOW_OPS = ("Relu", "Clip", "MaxPool", "AveragePool", "Add", "Concat", "Resize")
# A Conv that reads a model input directly (the stem on the raw image) stays float: with 1-3
# input channels INT8 kernels gain little there, and the image's own quantization error is
# largest. It took the text detector's map agreement from 0.989 to 0.991 (256x256, minmax).
FIRST_CONV_FLOAT = True
DEPTHWISE = "Conv (depthwise)"
ALL_CONVS = "Conv (all)"


@dataclass(frozen=True)
class Candidate:
    """One operator type quantized one way: `nodes` are the node names it covers."""

    name: str
    method: Method
    nodes: tuple[str, ...]

    @property
    def size_only(self) -> bool:
        return self.name in SIZE_ONLY


@dataclass(frozen=True)
class Measured:
    """p50 latency (ms) of the float model and of the model with one candidate in INT8."""

    candidate: Candidate
    float_ms: float
    int8_ms: float
    # Agreement of its outputs with float's on the calibration batches (output_agreement);
    # None when not measured.
    agreement: float | None = None

    @property
    def speedup(self) -> float:
        return self.float_ms / self.int8_ms if self.int8_ms > 0 else 0.0


@dataclass(frozen=True)
class Decision:
    """Whether a candidate stays INT8, with the measured reason."""

    name: str
    method: Method
    keep: bool
    float_ms: float
    int8_ms: float
    speedup: float
    reason: str
    agreement: float | None = None

    def note(self) -> dict[str, Any]:
        note: dict[str, Any] = {
            "op": self.name,
            "method": self.method if self.keep else "float",
            "floatMs": round(self.float_ms, 3),
            "int8Ms": round(self.int8_ms, 3),
            "speedup": round(self.speedup, 3),
            "reason": self.reason,
        }
        if self.agreement is not None:
            note["agreement"] = round(self.agreement, 4)
        return note


def decide(
    measured: Sequence[Measured],
    *,
    keep_min_speedup: float = KEEP_MIN_SPEEDUP,
    size_only_min_speedup: float = SIZE_ONLY_MIN_SPEEDUP,
    min_agreement: float | None = None,
) -> list[Decision]:
    """Keep each candidate in INT8 that measured faster by the margin and agrees with float
    at least `min_agreement` (MIN_AGREEMENT by default; when measured); the rest stay float,
    each with its figures."""
    min_agreement = MIN_AGREEMENT if min_agreement is None else min_agreement
    decisions = []
    for m in measured:
        threshold = size_only_min_speedup if m.candidate.size_only else keep_min_speedup
        fast = m.speedup >= threshold
        close = m.agreement is None or m.agreement >= min_agreement
        keep = fast and close
        figures = f"{m.int8_ms:.2f} ms in INT8 against {m.float_ms:.2f} ms float ({m.speedup:.2f}x)"
        if m.agreement is not None:
            figures += f", agreement {m.agreement:.4f}"
        if keep:
            reason = f"{figures}: {m.candidate.method} INT8"
        elif not close:
            reason = f"{figures}: stays float, agreement under {min_agreement}"
        elif m.candidate.size_only:
            reason = f"{figures}: stays float, slower than {threshold:.2f}x"
        else:
            reason = f"{figures}: stays float, not {threshold:.2f}x faster"
        decisions.append(
            Decision(
                m.candidate.name,
                m.candidate.method,
                keep,
                m.float_ms,
                m.int8_ms,
                m.speedup,
                reason,
                m.agreement,
            )
        )
    return decisions


def output_agreement(reference: np.ndarray, candidate: np.ndarray, task: Task) -> float:
    """How far a candidate's outputs agree with float's: the share of samples with the same
    top class for classifier logits (a classification task, or a generic model's
    [samples, classes] output), the mean per-sample cosine otherwise (embeddings, maps)."""
    import numpy as np

    logits = reference.ndim == 2 and reference.shape[1] > 1
    if task in (Task.text_classification, Task.image_classification) or (
        task is Task.generic and logits
    ):
        return float((reference.argmax(1) == candidate.argmax(1)).mean())
    a = reference.reshape(len(reference), -1).astype(np.float64)
    b = candidate.reshape(len(candidate), -1).astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(np.mean((a * b).sum(1) / norms))


def select(candidates: Sequence[Candidate], decisions: Sequence[Decision]) -> list[Candidate]:
    """What goes INT8: every kept dynamic candidate, and the one kept static candidate
    (a conv kind, or all convs together) that measured fastest; static ones overlap."""
    kept = [(c, d) for c, d in zip(candidates, decisions, strict=True) if d.keep]
    chosen = [c for c, _ in kept if c.method == "dynamic"]
    static = [(d.speedup, c) for c, d in kept if c.method == "static"]
    if static:
        chosen.append(max(static, key=lambda pair: pair[0])[1])
    return chosen


def candidates(model: onnx.ModelProto, *, representative: bool) -> tuple[list[Candidate], str]:
    """The candidates in `model` and a note on the convolutions when they are not one.

    Only MatMuls whose second input is a weight (an initializer) count: activation x
    activation MatMuls (attention scores) stay float in every mode; so do convolutions that
    read a model input (FIRST_CONV_FLOAT).
    """
    weights = {t.name for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input} - weights
    by_kind: dict[str, list[str]] = {}
    for node in model.graph.node:
        kind = node.op_type
        if kind == "Conv" and FIRST_CONV_FLOAT and node.input[0] in inputs:
            continue  # the first layer stays float (FIRST_CONV_FLOAT)
        if kind == "Conv":
            kind = DEPTHWISE if _group(node) > 1 else "Conv"
        elif kind not in DYNAMIC_CANDIDATES or not _has_weight(node, weights):
            continue
        by_kind.setdefault(kind, []).append(node.name)
    found: list[Candidate] = []
    conv_note = ""
    if representative and "Conv" in by_kind and DEPTHWISE in by_kind:
        # Measured alone, a MobileNet's 1x1/3x3 convs ran 0.1-0.7x: every depthwise conv left
        # float between them costs a dequantize and a quantize. Together they may win.
        together = tuple(by_kind["Conv"] + by_kind[DEPTHWISE])
        found.append(Candidate(ALL_CONVS, "static", together))
    for kind, nodes in by_kind.items():
        if kind in ("Conv", DEPTHWISE):
            if representative:
                found.append(Candidate(kind, "static", tuple(nodes)))
            else:
                conv_note = (
                    f"{len(nodes)} {kind} nodes stay float: only synthetic random inputs fit "
                    "the model (give data.calibration), and dynamic INT8 (ConvInteger) ran "
                    "4-6x slower than float"
                )
        else:
            found.append(Candidate(kind, "dynamic", tuple(nodes)))
    return found, conv_note


def _has_weight(node: onnx.NodeProto, weights: set[str]) -> bool:
    """MatMul: its B is a weight; Gather: its table is; fused ops carry their own."""
    if node.op_type == "MatMul":
        return len(node.input) > 1 and node.input[1] in weights
    if node.op_type == "Gather":
        return bool(node.input) and node.input[0] in weights
    return True


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


# --- the step --------------------------------------------------------------------------------


def quantize_auto(model: Model, config: QuantizeConfig, ctx: StepContext) -> Model:
    """`model` (ONNX) with each operator type in INT8 where that measured faster on this CPU.

    Notes (ctx.report): quantizePreparation, autoData, autoDecisions (per candidate: method,
    float and INT8 p50, speedup, reason), autoFloat, autoTuneAgreement (the result against
    the prepared float model on the calibration batches), autoSpeedup, quantization, and
    for the operator types kept in dynamic INT8 the notes `mode: dynamic` writes (cpuInt8,
    int8Variant, int8Reason, int8OpErrors, keptFloat): the same CPU-suited variant.
    Raises ResultRejected with the measured figures when nothing is faster in INT8 at
    MIN_AGREEMENT.
    """
    import onnx

    from kondense.runners.measure.inference import available_cpus
    from kondense.runners.steps.quantize import gemm_as_matmul, preprocess

    work = ctx.workdir / "auto"
    work.mkdir(parents=True, exist_ok=True)
    large = onnx_files.onnx_size_bytes(model.path) > onnx_files.EXTERNAL_DATA_THRESHOLD
    ctx.progress("quantize auto: preparing the graph", 0, 4)
    # The weights stay in their file: every change here is to the graph.
    graph = onnx.load_model(str(model.path), load_external_data=False)
    opset_before = prepare.default_opset(graph)
    graph = prepare.upgrade_opset(graph)
    folded = prepare.fold_constant_weights(graph)
    prepare.name_nodes(graph)

    signatures = _signatures(model.path, ctx.inputs)
    data_kind, batches = _representative(model, signatures, ctx)
    representative = data_kind != "synthetic"
    preview, _ = candidates(graph, representative=representative)
    static = any(c.method == "static" for c in preview)
    original_dims = prepare.graph_dims(graph)
    fixed: dict[str, list[int]] = {}
    if static and batches:
        fixed = {name: list(array.shape) for name, array in batches[0].inputs.items()}
        prepare.fix_input_dims(graph, fixed)
    prepared = onnx_files.save_beside_data(graph, model.path, work / "prepared.onnx")
    del graph
    float_path, how = preprocess(prepared, work / "float.onnx")
    gemm_as_matmul(float_path)
    ctx.report(
        "quantizePreparation",
        {
            "constantsFolded": folded,
            "opset": f"{opset_before} -> {max(opset_before, prepare.PER_CHANNEL_OPSET)}",
            "fixedDims": {n: s[1:] for n, s in fixed.items()},
            "shapeInference": how,
        },
    )
    ctx.report("autoData", data_kind)

    found, conv_note = candidates(
        onnx.load_model(str(float_path), load_external_data=False), representative=representative
    )
    if conv_note:
        ctx.report("autoConvolutions", conv_note)
    if not found:
        raise ResultRejected(
            "quantize mode auto found nothing to quantize: no MatMul/Gather with weights"
            + (f", and {conv_note}" if conv_note else " and no convolutions"),
            field="spec.steps.quantize.mode",
        )
    timing_inputs = _timing_inputs(batches, signatures, ctx)
    threads = available_cpus()

    ctx.progress("quantize auto: measuring each operator type in INT8", 1, 4)
    alone = [_stage(ctx.progress, f"quantize auto, {c.name} alone") for c in found]
    built = [
        _build(float_path, work / f"only-{index}.onnx", [c], batches, config, large, progress=p)
        for index, (c, p) in enumerate(zip(found, alone, strict=True))
    ]
    timings = _time([float_path, *built], timing_inputs, threads)
    whole = _stage(ctx.progress, "quantize auto")
    reference = _outputs(float_path, batches, _stage(ctx.progress, "quantize auto, float"))
    agreements = [
        output_agreement(reference, _outputs(path, batches, p), ctx.task) if batches else None
        for path, p in zip(built, alone, strict=True)
    ]
    measured = [
        Measured(c, timings[0], t, a)
        for c, t, a in zip(found, timings[1:], agreements, strict=True)
    ]
    decisions = decide(measured)
    ctx.report("autoDecisions", [d.note() for d in decisions])
    ctx.report("autoFloat", [d.name for d in decisions if not d.keep])
    kept = select(found, decisions)
    if not any(not c.size_only for c in kept):
        figures = "; ".join(
            f"{d.name} {d.method} {d.speedup:.2f}x"
            + (f" agreement {d.agreement:.4f}" if d.agreement is not None else "")
            for d in decisions
        )
        raise ResultRejected(
            f"quantize mode auto: no operator type ran faster in INT8 on this CPU at output "
            f"agreement {MIN_AGREEMENT} on the calibration batches ({threads} threads, "
            f"batch 1; {figures}; {KEEP_MIN_SPEEDUP:.2f}x needed). The model stays float; "
            "drop the quantize step, or set mode: static or dynamic to force INT8",
            field="spec.steps.quantize.mode",
        )

    ctx.progress("quantize auto: combining the operator types kept in INT8", 2, 4)
    combined = _build(
        float_path,
        work / "combined.onnx",
        kept,
        batches,
        config,
        large,
        (ctx, model.assets),
        progress=whole,
    )
    final = onnx.load_model(str(combined), load_external_data=True)
    prepare.restore_input_dims(final, original_dims)
    target = onnx_files.save_onnx(final, ctx.workdir / MODEL_FILE, external=large)
    del final

    if batches:
        agreement = output_agreement(reference, _outputs(combined, batches, whole), ctx.task)
        ctx.report("autoTuneAgreement", round(agreement, 6))
    ctx.progress("quantize auto: timing the result", 3, 4)
    original_ms, float_ms, result_ms = _time(
        [model.path, float_path, combined], timing_inputs, threads
    )
    ctx.report(
        "autoSpeedup",
        {
            "inputMs": round(original_ms, 3),
            "preparedFloatMs": round(float_ms, 3),
            "int8Ms": round(result_ms, 3),
            "speedup": round(original_ms / result_ms, 3) if result_ms else 0.0,
            "threads": threads,
            "batch": 1,
        },
    )
    summary = ", ".join(f"{c.name} {c.method}" for c in kept)
    ctx.report("quantization", f"auto ({summary})")
    shutil.rmtree(work, ignore_errors=True)
    return model.with_(path=target)


def _signatures(path: Path, declared: list[TensorSpec] | None) -> list[InputSignature]:
    import numpy as np

    from kondense.runners.io.data import InputSignature, onnx_input_signatures

    signatures = onnx_input_signatures(path)
    if not declared:
        return signatures
    shapes = {spec.name: spec for spec in declared}
    return [
        InputSignature(s.name, tuple(shapes[s.name].shape), np.dtype(shapes[s.name].dtype.value))
        if s.name in shapes
        else s
        for s in signatures
    ]


def _representative(
    model: Model, signatures: list[InputSignature], ctx: StepContext
) -> tuple[str, list[Batch]]:
    """Calibration batches and what they are: the user's calibration data, a built-in set
    (its tune split) or synthetic inputs."""
    from kondense.runners.io.builtin import representative_batches
    from kondense.runners.io.data import iter_batches

    source = ctx.data.calibration
    names = [s.name for s in signatures]
    if source is not None:
        capped = source.model_copy(
            update={"samples": min(source.samples, AUTO_CALIBRATION_SAMPLES)}
        )
        batches = list(
            iter_batches(
                capped,
                input_names=names,
                tokenizer_dir=tokenizer_dir(model.assets),
                batch_size=CALIBRATION_BATCH,
                sequence_length=ctx.sequence_length,
            )
        )
        # Histogram calibrators stack every batch: a short last batch would not fit.
        if len(batches) > 1 and len(batches[-1]) != len(batches[0]):
            batches.pop()
        if not batches:
            raise BadInput(
                "the calibration data produced no samples; check data.calibration.uri",
                field="spec.data.calibration.uri",
            )
        return "calibration", batches
    kind, batches = representative_batches(
        signatures,
        model.assets,
        split="tune",
        batch_size=CALIBRATION_BATCH,
        sequence_length=ctx.sequence_length,
    )
    return kind.value, batches


def _timing_inputs(
    batches: list[Batch], signatures: list[InputSignature], ctx: StepContext
) -> dict[str, np.ndarray]:
    """One sample (batch 1) of the representative inputs, or synthetic ones."""
    from kondense.runners.io.data import synthetic_batches

    if batches:
        return {name: array[:1] for name, array in batches[0].inputs.items()}
    (batch,) = synthetic_batches(
        signatures, batches=1, batch_size=1, sequence_length=ctx.sequence_length
    )
    return batch.inputs


def _stage(progress: Progress, label: str) -> Progress:
    """`progress` with the stages the quantizers report as "quantize: ..." named `label: ...`:
    auto quantizes each candidate alone, then the kept ones together, and the log tells which."""

    def report(description: str, completed: float, total: float | None) -> None:
        progress(f"{label}: {description.removeprefix('quantize: ')}", completed, total)

    return report


def _outputs(path: Path, batches: list[Batch], progress: Progress = no_progress) -> np.ndarray:
    """The model's first output on every batch, concatenated (float64); token states
    [N, T, H] are mean-pooled over the attention mask: padding positions carry no meaning,
    and would weigh as much as the sentence's tokens. Each batch run is reported to
    `progress`."""
    import numpy as np

    from kondense.runners.measure.evaluate import mean_pool
    from kondense.runners.measure.inference import CPU, Device, open_session, run_batches

    session = open_session(path, threads=1, device=Device("cpu", CPU))
    outputs = []
    stage = "quantize: outputs on the calibration batches"
    for batch, output in run_batches(session, counted(batches, progress, stage, len(batches))):
        mask = batch.inputs.get("attention_mask")
        outputs.append(mean_pool(output, mask) if mask is not None else output)
    return np.concatenate(outputs).astype(np.float64)


def _time(paths: Sequence[Path], inputs: dict[str, np.ndarray], threads: int) -> list[float]:
    """p50 latency (ms) of each model: the median of MEASURE_REPEATS interleaved benchmarks.

    On a shared 2-core machine one benchmark's p50 of the same model varied 1.2-5.2 ms
    between calls; the median of repeats with fresh sessions keeps one burst from deciding.
    """
    import numpy as np

    from kondense.runners.measure.benchmark import benchmark_models
    from kondense.runners.measure.inference import CPU, Device

    repeats = [
        [
            t.latency_ms_p50
            for t in benchmark_models(
                paths,
                inputs,
                threads=threads,
                device=Device("cpu", CPU),
                warmup=MEASURE_WARMUP,
                runs=MEASURE_RUNS // MEASURE_REPEATS,
            )
        ]
        for _ in range(MEASURE_REPEATS)
    ]
    return [float(v) for v in np.median(np.asarray(repeats), axis=0)]


def _build(
    source: Path,
    target: Path,
    chosen: Sequence[Candidate],
    batches: list[Batch],
    config: QuantizeConfig,
    large: bool,
    tuned: tuple[StepContext, Path | None] | None = None,
    *,
    progress: Progress,
) -> Path:
    """`source` with the `chosen` candidates in INT8 (static first, then dynamic).

    With `tuned` (the step's context and the model's assets), the dynamic part is the one
    `mode: dynamic` makes: the variant suited to this CPU, its most sensitive ops kept float
    (quantize_dynamic_for_cpu, whose notes join the step's); without, the default variant,
    which is enough to time an operator type. Calibration batches and weights quantized are
    reported to `progress`.
    """
    from kondense.runners.steps.quantize import quantize_dynamic_for_cpu, quantize_dynamic_int8

    current = source
    static = [c for c in chosen if c.method == "static"]
    if static:
        static_target = target.with_name(target.stem + "-static.onnx")
        quantize_static_nodes(
            current, static_target, static, batches, config, large=large, progress=progress
        )
        current = static_target
    dynamic = [c for c in chosen if c.method == "dynamic"]
    if not dynamic:
        shutil.move(current, target)
        return target
    import onnx

    chosen_nodes = {n for c in dynamic for n in c.nodes}
    # quantize_dynamic_int8 rewrites Gemm in its source in place: it gets a copy.
    copy = target.with_name(target.stem + "-input.onnx")
    shutil.copyfile(current, copy)
    # Everything else stays as it is: other candidates, convolutions (never ConvInteger) and
    # the convolutions static QDQ already quantized.
    graph = onnx.load_model(str(copy), load_external_data=False).graph
    others = [n.name for n in graph.node if n.name not in chosen_nodes]
    excluded = [*(config.exclude_nodes or []), *others]
    only_chosen = config.model_copy(update={"exclude_nodes": excluded})
    if tuned is None:
        quantize_dynamic_int8(copy, target, only_chosen, large=large, progress=progress)
    else:
        ctx, assets = tuned
        ctx = replace(ctx, progress=progress)
        quantize_dynamic_for_cpu(copy, target, only_chosen, ctx, assets=assets, large=large)
    return target


def quantize_static_nodes(
    source: Path,
    target: Path,
    chosen: Sequence[Candidate],
    batches: list[Batch],
    config: QuantizeConfig,
    *,
    large: bool,
    progress: Progress = no_progress,
) -> None:
    """Static QDQ INT8 of the `chosen` nodes and the flow ops between them, calibrated on
    `batches`: S8 weights (per channel unless config says not), U8 activations. Calibration
    batches and weights quantized are reported to `progress`."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization import CalibrationMethod as OrtMethod

    from kondense.runners.int8.tensor_progress import (
        quantizer_reports_weights,
        weights_to_quantize,
    )
    from kondense.runners.steps.quantize import UNKNOWN_TYPES_ARE_FLOAT

    graph = onnx.load_model(str(source), load_external_data=False).graph
    flow = [n.name for n in graph.node if n.op_type in STATIC_FLOW_OPS]
    nodes = [n for c in chosen for n in c.nodes]
    excluded = set(config.exclude_nodes or [])
    to_quantize = [n for n in [*nodes, *flow] if n not in excluded]
    op_types = ["Conv", *STATIC_FLOW_OPS]
    others = {n.name for n in graph.node} - set(to_quantize)
    weights = weights_to_quantize(graph, op_types, others)
    calibration = "quantize: static INT8 calibration, batches"
    methods = {
        CalibrationMethod.minmax: OrtMethod.MinMax,
        CalibrationMethod.entropy: OrtMethod.Entropy,
        CalibrationMethod.percentile: OrtMethod.Percentile,
    }

    class Reader(CalibrationDataReader):
        """The batches, each one the calibrator has run reported to `progress`. ONNX Runtime
        calibrates and quantizes in one call: the weights' stage starts once the calibrator
        has read the last batch, so that its estimate counts from there."""

        def __init__(self, weighing: contextlib.ExitStack) -> None:
            self.weighing = weighing
            self.weights_reported = False
            self.rewind()

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            if batch is not None:
                return dict(batch.inputs)
            if not self.weights_reported:
                self.weights_reported = True
                self.weighing.enter_context(
                    quantizer_reports_weights(
                        progress, "quantize: static INT8, weight tensors", weights
                    )
                )
            return None

        def rewind(self) -> None:
            self.batches = counted(batches, progress, calibration, len(batches))

    with contextlib.ExitStack() as weighing:
        quantize_static(
            str(source),
            str(target),
            Reader(weighing),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=methods[config.calibration_method],
            op_types_to_quantize=op_types,
            nodes_to_quantize=to_quantize,
            use_external_data_format=large,
            extra_options={"MatMulConstBOnly": True, **UNKNOWN_TYPES_ARE_FLOAT},
        )
