"""quantize: INT8 dynamic, INT8 static (QDQ, calibrated) and FP16, with ONNX Runtime's tools.

ONNX Runtime pitfalls handled here rather than passed to the user:
- shape inference: `quant_pre_process` runs first; symbolic shape inference fails on some
  com.microsoft fused ops, so it is retried without it, then skipped, and what happened is
  reported;
- fused ops from transformer fusion (Attention, EmbedLayerNormalization) are quantized by
  their integer counterparts, and activation x activation MatMuls (attention scores) stay in
  float, which is what keeps transformer embeddings accurate;
- models over 2 GB are written with external data at every stage;
- dynamic INT8 suits the CPU it runs on (`quantize_dynamic_for_cpu`): the variant is chosen
  by measuring it there (runners/int8/variants.py), and the few ops INT8 hurts most stay
  float when the output would otherwise drift (runners/int8/sensitivity.py).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kondense.api.errors import BadInput
from kondense.api.spec import (
    CalibrationMethod,
    DataSource,
    QuantizeConfig,
    QuantizeMode,
    Task,
)
from kondense.runners.core import Model, Progress, StepContext, no_progress
from kondense.runners.int8 import variants
from kondense.runners.int8.variants import Variant
from kondense.runners.model import MODEL_FILE, onnx_files
from kondense.runners.model.assets import tokenizer_dir

if TYPE_CHECKING:
    import numpy as np

    from kondense.runners.io.data import Batch

log = logging.getLogger(__name__)

# Static calibration reads this many samples at most, in chunks of CALIBRATION_CHUNK; ORT's
# calibrator holds the activations of CALIBRATION_WINDOW chunks at most.
CALIBRATION_MAX_SAMPLES = 1000
CALIBRATION_MIN_SAMPLES = 100
CALIBRATION_CHUNK = 16
CALIBRATION_WINDOW = 4
# Ops kept in float32 by fp16 besides ONNX Runtime's list of ops without fp16 kernels:
# reductions/normalisations whose float16 range overflows on long sequences.
FP16_EXTRA_BLOCKED = ("ReduceSum", "ReduceMean", "Pow", "Sqrt", "Erf", "Softmax")
# Dynamic INT8 quantizes these ops (integer kernels exist on every CPU build); the fused
# Attention and EmbedLayerNormalization of transformer fusion included. The embedding Gather
# is included because the word embeddings are half of a small BERT's bytes.
DYNAMIC_OPS = ("MatMul", "Attention", "EmbedLayerNormalization", "Gather", "Conv")
# Dynamic INT8 is tuned on this many samples, in batches of TUNE_BATCH: enough to rank
# variants and ops on MiniLM in seconds on two cores.
TUNE_SAMPLES = 32
TUNE_BATCH = 8
# A variant's latency: LATENCY_TURNS turns of LATENCY_RUNS runs each, after a warm-up turn.
LATENCY_TURNS = 4
LATENCY_RUNS = 5
# An op stays float only if that raises the tuning cosine by this much at least.
SENSITIVITY_MIN_GAIN = 0.0005
# How many of the ops with the largest INT8 error the report names.
SENSITIVITY_REPORTED = 5
# Static INT8 puts QDQ pairs around weighted ops and the ops int8 flows through unchanged.
# Quantizing every registered op (ORT's default: Add, Mul, LayerNormalization...) took MiniLM's
# embedding cosine to 0.37; this list gave 0.94 (per-channel, minmax, 160 samples).
STATIC_OPS = ("Conv", "Gemm", "MatMul", "Gather", "Relu", "MaxPool", "AveragePool", "Flatten")
# Shape inference cannot type the outputs of some com.microsoft ops (BiasGelu, FastGelu...);
# the quantizer then stops with "Unable to find data type". Those tensors are float.
UNKNOWN_TYPES_ARE_FLOAT = {"DefaultTensorType": 1}  # onnx.TensorProto.FLOAT


def run(model: Model, config: QuantizeConfig, ctx: StepContext) -> Model:
    """`model` (ONNX) quantized per `config.mode`, saved as ctx.workdir/model.onnx."""
    onnx_files.require_onnx(model, "quantize")
    target = ctx.workdir / MODEL_FILE
    large = onnx_files.onnx_size_bytes(model.path) > onnx_files.EXTERNAL_DATA_THRESHOLD
    if config.mode is QuantizeMode.fp16:
        ctx.progress("quantize: converting to fp16", 0, 1)
        convert_fp16(model.path, target, config, progress=ctx.progress)
        ctx.report("quantization", "fp16")
        return model.with_(path=target)

    if config.mode is QuantizeMode.auto:
        from kondense.runners.int8.auto import quantize_auto

        return quantize_auto(model, config, ctx)

    ctx.progress("quantize: shape inference", 0, 2)
    prepared, how = preprocess(model.path, ctx.workdir / "preprocessed.onnx")
    ctx.report("quantizePreprocess", how)
    from kondense.runners.int8.prepare import fold_conv_constant_weights

    if folded := fold_conv_constant_weights(prepared, large=large):
        ctx.report("constantsFolded", folded)  # else the quantizers stop on such convs
    if config.mode is QuantizeMode.dynamic:
        ctx.progress("quantize: dynamic INT8", 1, 2)
        quantize_dynamic_for_cpu(prepared, target, config, ctx, assets=model.assets, large=large)
    else:
        source = ctx.data.calibration
        if source is None:
            raise BadInput(
                "static INT8 quantization needs calibration data; add data.calibration.uri "
                "(100-1000 representative samples) or use mode: dynamic",
                field="spec.data.calibration",
            )
        ctx.progress("quantize: static INT8 calibration", 1, 2)
        reader = CalibrationReader(
            source,
            input_names=model_inputs(prepared),
            tokenizer_dir=tokenizer_dir(model.assets),
            sequence_length=ctx.sequence_length,
        )
        quantize_static_int8(prepared, target, config, reader, large=large, progress=ctx.progress)
        ctx.report("calibrationSamples", reader.samples_read)
        if reader.samples_read < CALIBRATION_MIN_SAMPLES:
            ctx.report(
                "calibrationWarning",
                f"only {reader.samples_read} calibration samples; 100-1000 representative "
                "samples give stable activation ranges",
            )
    _remove_onnx(prepared)
    ctx.report("quantization", config.mode.value)
    return model.with_(path=target)


# --- shared ----------------------------------------------------------------------------------


def preprocess(source: Path, target: Path) -> tuple[Path, str]:
    """Shape inference before quantization, degrading gracefully: what ORT's
    `quant_pre_process` does with its optimization skipped, on the graph alone. The weights
    are not loaded: the source's external data is copied beside `target`, file to file.

    Returns the model to quantize and which shape inference ran.
    """
    import onnx
    from onnxruntime.quantization.quant_utils import add_pre_process_metadata

    from kondense.runners.int8.shapes import infer_shapes

    # ORT's own optimization pass is skipped: it fuses MatMul+Add into Gemm (no dynamic INT8
    # kernel) and renames nodes, which would break excludeNodes; the optimize step and ONNX
    # Runtime at load time do that work instead.
    model = onnx.load_model(str(source), load_external_data=False)
    how = "none (shape inference failed; quantizing the model as it is)"
    attempts = (
        ("symbolic and ONNX shape inference", True),
        # Symbolic shape inference has no rules for some com.microsoft ops.
        ("ONNX shape inference", False),
    )
    for description, symbolic in attempts:
        try:
            with scratch_cwd(target.parent):
                infer_shapes(model, symbolic=symbolic)
            add_pre_process_metadata(model)
            how = description
            break
        except Exception as error:  # each inference raises its own types
            log.info("shape inference (%s) failed: %s", description, error)
    # A copy, so later in-place rewrites (Gemm -> MatMul) never touch the input model.
    return onnx_files.save_beside_data(model, source, target), how


@contextlib.contextmanager
def scratch_cwd(parent: Path) -> Iterator[None]:
    """Run inside a temporary directory under `parent`, removed afterwards.

    ONNX Runtime's symbolic shape inference writes `sym_shape_infer_temp.onnx` and its
    external data into the current directory when it falls back; this keeps them out of
    wherever the runner was started.
    """
    with (
        tempfile.TemporaryDirectory(dir=parent, prefix="scratch-") as scratch,
        contextlib.chdir(scratch),
    ):
        yield


def model_inputs(path: Path) -> list[str]:
    """The graph inputs of the ONNX model at `path` that are not initializers."""
    import onnx

    graph = onnx.load_model(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def _present_ops(path: Path) -> set[str]:
    import onnx

    graph = onnx.load_model(str(path), load_external_data=False).graph
    return {n.op_type for n in graph.node}


def _weights_to_quantize(path: Path, ops: Sequence[str], excluded: Sequence[str]) -> int:
    import onnx

    from kondense.runners.int8.tensor_progress import weights_to_quantize

    graph = onnx.load_model(str(path), load_external_data=False).graph
    return weights_to_quantize(graph, ops, set(excluded))


# --- dynamic ---------------------------------------------------------------------------------


def quantize_dynamic_int8(
    source: Path,
    target: Path,
    config: QuantizeConfig,
    *,
    large: bool,
    variant: Variant = variants.S8,
    keep_float: Sequence[str] = (),
    progress: Progress = no_progress,
) -> None:
    """Dynamic INT8: 8-bit weights (signed and full range unless `variant` says otherwise; per
    channel by default), activations at run time; config.exclude_nodes and `keep_float`
    stay float. Each weight quantized is reported to `progress`."""
    from onnxruntime.quantization import quantize_dynamic

    from kondense.runners.int8.shapes import quantizer_reloads_in_place
    from kondense.runners.int8.tensor_progress import quantizer_reports_weights

    source = gemm_as_matmul(source)
    present = _present_ops(source)
    excluded = [*(config.exclude_nodes or []), *keep_float]
    ops = [op for op in DYNAMIC_OPS if op in present]
    weights = _weights_to_quantize(source, ops, excluded)
    with (
        quantizer_reloads_in_place(),
        quantizer_reports_weights(
            progress, f"quantize: dynamic INT8 ({variant.name}), weight tensors", weights
        ),
    ):
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=variant.weight_type(),
            per_channel=config.per_channel,
            reduce_range=variant.reduce_range,
            op_types_to_quantize=ops,
            nodes_to_exclude=excluded,
            use_external_data_format=large,
            extra_options={
                # Attention scores (activation x activation MatMul) stay float: quantizing them
                # both at run time is where dynamic INT8 loses most accuracy on transformers.
                "MatMulConstBOnly": True,
                **UNKNOWN_TYPES_ARE_FLOAT,
            },
        )


def quantize_dynamic_for_cpu(
    source: Path,
    target: Path,
    config: QuantizeConfig,
    ctx: StepContext,
    *,
    assets: Path | None,
    large: bool,
) -> None:
    """Dynamic INT8 suited to this CPU, with its most sensitive ops kept float when needed.

    1. The CPU's integer dot-product kind is noted (`cpuInt8`), and a probe tells whether its
       u8 x s8 kernel saturates (AVX2-only CPUs do); the candidate variants for it are
       measured on tuning data (cosine of the outputs to float's, and latency when there is
       a choice), and the fastest meeting TUNE_COSINE_TARGET is kept (`int8Variant`,
       `int8Reason` with the figures).
    2. Unless config.keep_float is 0, each weighted op's own INT8 error is measured in one
       run (runners/int8/sensitivity.py, `int8OpErrors`); while the tuning cosine is under
       the target, the op with the largest error is kept float if that measurably raises the
       cosine, at most config.keep_float of them (`keptFloat` says which and why).

    Measured on MiniLM (100 held-out sentences, sequence 128): with AMX/VNNI kernels the
    probe is exact and S8 per channel gives cosine 0.9925, and nothing is kept float:
    keeping the four worst ops float would gain 0.002 cosine for 26% more bytes (3.2x
    smaller instead of 3.9x).
    """
    from kondense.runners.measure.cpu import cpu_info

    kind = cpu_info().int8_dot_product
    ctx.report("cpuInt8", kind)
    probe = variants.u8s8_probe()
    options = variants.candidates(probe.saturates)
    if len(options) == 1 and config.keep_float == 0:
        quantize_dynamic_int8(
            source, target, config, large=large, variant=options[0], progress=ctx.progress
        )
        ctx.report("int8Variant", options[0].name)
        ctx.report("int8Reason", f"{kind}: {probe.describe()}; keepFloat 0: nothing measured")
        return
    ctx.progress("quantize: dynamic INT8, measuring variants", 1, 3)
    what, batches = tune_batches(source, ctx, assets)
    tuning = TuningRun(source, batches, pooled=ctx.task is Task.text_embedding)
    paths = [ctx.workdir / f"int8-{v.name}.onnx" for v in options]
    for variant, path in zip(options, paths, strict=True):
        quantize_dynamic_int8(
            source, path, config, large=large, variant=variant, progress=ctx.progress
        )
    cosines = [tuning.cosine(path) for path in paths]
    timed = tuning.latencies(paths) if len(paths) > 1 else [None]
    trials = [variants.Trial(v, c, ms) for v, c, ms in zip(options, cosines, timed, strict=True)]
    chosen = variants.choose(trials)
    chosen_path = paths[trials.index(chosen)]
    for path in paths:
        if path != chosen_path:
            _remove_onnx(path)
    meets = chosen.cosine >= variants.TUNE_COSINE_TARGET
    ctx.report("int8Variant", chosen.variant.name)
    ctx.report(
        "int8Reason",
        f"{kind}: {probe.describe()}; measured on {tuning.samples} tuning samples ({what}): "
        + "; ".join(t.describe() for t in trials)
        + ("; the only candidate" if len(trials) == 1 else "")
        + ("; the fastest meeting" if meets and len(trials) > 1 else "")
        + ("" if meets else "; the most accurate, under")
        + (f" cosine {variants.TUNE_COSINE_TARGET}" if len(trials) > 1 or not meets else ""),
    )
    if config.keep_float > 0:
        ctx.progress("quantize: dynamic INT8, measuring each op", 2, 3)
        chosen_path = keep_sensitive_float(
            source, chosen_path, chosen, config, ctx, tuning, large=large
        )
    _remove_onnx(target)
    # A large model's external data file stays beside it under the name the model refers to.
    shutil.move(chosen_path, target)


def _remove_onnx(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".data").unlink(missing_ok=True)


def keep_sensitive_float(
    source: Path,
    quantized: Path,
    chosen: variants.Trial,
    config: QuantizeConfig,
    ctx: StepContext,
    tuning: TuningRun,
    *,
    large: bool,
) -> Path:
    """`quantized`, or a re-quantization of `source` with its most sensitive ops in float."""
    import onnx

    from kondense.runners.int8 import sensitivity

    excluded = set(config.exclude_nodes or [])
    present = _present_ops(source)
    float_model = onnx.load_model(str(source), load_external_data=False)
    ops = [
        op
        for op in sensitivity.weighted_ops(float_model, [o for o in DYNAMIC_OPS if o in present])
        if op.name not in excluded
    ]
    del float_model
    errors = sensitivity.op_errors(
        source,
        quantized,
        tuning.batches,
        ops,
        ctx.workdir,
        threads=tuning.threads,
        progress=ctx.progress,
    )
    ranking = sensitivity.ranked(errors)
    ctx.report(
        "int8OpErrors",
        ", ".join(f"{name} {error:.4f}" for name, error in ranking[:SENSITIVITY_REPORTED]),
    )
    target = variants.TUNE_COSINE_TARGET
    cosine = chosen.cosine
    kept: list[str] = []
    reasons: list[str] = []
    for name, error in ranking[: config.keep_float]:
        if cosine >= target:
            break
        trial = ctx.workdir / f"int8-keep-{len(kept) + 1}.onnx"
        quantize_dynamic_int8(
            source,
            trial,
            config,
            large=large,
            variant=chosen.variant,
            keep_float=[*kept, name],
            progress=ctx.progress,
        )
        gained = tuning.cosine(trial)
        if gained - cosine < SENSITIVITY_MIN_GAIN:
            _remove_onnx(trial)
            continue
        reasons.append(f"{name} (op error {error:.4f}; tuning cosine {cosine:.4f} -> {gained:.4f})")
        kept.append(name)
        cosine = gained
        _remove_onnx(quantized)
        quantized = trial
    if reasons:
        ctx.report("keptFloat", ", ".join(reasons))
    elif cosine >= target:
        ctx.report(
            "keptFloat",
            f"none: tuning cosine {cosine:.4f} meets {target} with every weighted op in INT8",
        )
    else:
        ctx.report(
            "keptFloat",
            f"none: tuning cosine {cosine:.4f} is under {target}, and keeping the "
            f"{min(config.keep_float, len(ranking))} worst ops float did not raise it by "
            f"{SENSITIVITY_MIN_GAIN}",
        )
    return quantized


class TuningRun:
    """The float model's outputs on the tuning batches, to score INT8 candidates against."""

    def __init__(self, source: Path, batches: list[Batch], *, pooled: bool) -> None:
        from kondense.runners.measure.inference import available_cpus

        self.batches = batches
        self.pooled = pooled
        self.threads = available_cpus()
        self.samples = sum(len(b) for b in batches)
        self.reference = self._outputs(source)

    def _session(self, path: Path) -> Any:
        from kondense.runners.measure.inference import CPU, Device, open_session

        return open_session(path, threads=self.threads, device=Device("cpu", CPU))

    def _outputs(self, path: Path) -> np.ndarray:
        import numpy as np

        from kondense.runners.measure.evaluate import mean_pool
        from kondense.runners.measure.inference import run_batches

        outputs = []
        for batch, output in run_batches(self._session(path), self.batches):
            if self.pooled:
                output = mean_pool(output, batch.inputs.get("attention_mask"))
            outputs.append(output.reshape(len(output), -1).astype(np.float64))
        return np.concatenate(outputs)

    def cosine(self, path: Path) -> float:
        """Mean cosine of `path`'s outputs to the float model's (as one vector when the model
        gives one value per sample: the cosine of two scalars is only their sign)."""
        from kondense.runners.measure.evaluate import mean_cosine

        got, want = self._outputs(path), self.reference
        if want.shape[1] == 1:
            got, want = got.reshape(1, -1), want.reshape(1, -1)
        return mean_cosine(got, want)

    def latencies(self, paths: Sequence[Path]) -> list[float | None]:
        """Median ms of one sample per model; models take turns, so load hits each alike."""
        import time

        import numpy as np

        from kondense.runners.measure.inference import feed

        sessions = [self._session(p) for p in paths]
        one = {k: v[:1] for k, v in self.batches[0].inputs.items()}
        feeds = [feed(s, one) for s in sessions]
        times: list[list[float]] = [[] for _ in paths]
        for turn in range(LATENCY_TURNS + 1):
            for index, (session, inputs) in enumerate(zip(sessions, feeds, strict=True)):
                for _ in range(LATENCY_RUNS):
                    started = time.perf_counter()
                    session.run(None, inputs)
                    if turn:  # the first turn warms up
                        times[index].append((time.perf_counter() - started) * 1000)
        return [float(np.median(t)) for t in times]


def tune_batches(source: Path, ctx: StepContext, assets: Path | None) -> tuple[str, list[Batch]]:
    """Tuning inputs and what they are: spec.data.calibration when given, else kondense's
    built-in tune split (never the held-out evaluate split); TUNE_SAMPLES at most."""
    from kondense.runners.io.builtin import representative_batches
    from kondense.runners.io.data import iter_batches, onnx_input_signatures

    calibration = ctx.data.calibration
    if calibration is not None:
        batches = list(
            iter_batches(
                calibration.model_copy(update={"samples": min(calibration.samples, TUNE_SAMPLES)}),
                input_names=model_inputs(source),
                tokenizer_dir=tokenizer_dir(assets),
                batch_size=TUNE_BATCH,
                sequence_length=ctx.sequence_length,
            )
        )
        if batches:
            return "spec.data.calibration", batches
    kind, batches = representative_batches(
        onnx_input_signatures(source),
        assets,
        split="tune",
        batch_size=TUNE_BATCH,
        sequence_length=ctx.sequence_length,
        samples=TUNE_SAMPLES,
    )
    return kind.value, batches


def gemm_as_matmul(path: Path) -> Path:
    """Rewrite Gemm (how torch exports nn.Linear) as MatMul + Add, in place.

    Dynamic INT8 has no integer Gemm, so a classifier head exported as Gemm would otherwise
    stay in float32 and keep most of a small CNN's bytes.
    """
    import onnx
    from onnxruntime.quantization.onnx_model import ONNXModel

    if "Gemm" not in _present_ops(path):
        return path
    wrapped = ONNXModel(onnx.load_model(str(path), load_external_data=True))
    wrapped.replace_gemm_with_matmul()
    onnx_files.save_onnx(wrapped.model, path)
    return path


# --- static ----------------------------------------------------------------------------------


class CalibrationReader:
    """Streams spec.data.calibration to ONNX Runtime's calibrator in chunks.

    Reads at most 1000 samples in chunks of exactly CALIBRATION_CHUNK (16) samples, keeping
    only the inputs the ONNX model declares; `samples_read` counts the samples used.
    """

    def __init__(
        self,
        source: DataSource,
        *,
        input_names: Sequence[str],
        tokenizer_dir: Path | None,
        sequence_length: int,
    ) -> None:
        self.source = source.model_copy(
            update={"samples": min(source.samples, CALIBRATION_MAX_SAMPLES)}
        )
        self.input_names = list(input_names)
        self.tokenizer_dir = tokenizer_dir
        self.sequence_length = sequence_length
        self.samples_read = 0
        self._batches: Iterator[dict[str, np.ndarray]] | None = None

    def _stream(self) -> Iterator[dict[str, np.ndarray]]:
        import numpy as np

        from kondense.runners.io.data import iter_batches

        # ORT's histogram calibrators (entropy, percentile) stack every chunk's outputs into one
        # array, so all chunks must have the same shape: the stream is re-cut into chunks of
        # exactly CALIBRATION_CHUNK samples and a short remainder is dropped (unless it is all).
        pending: dict[str, list[np.ndarray]] = {n: [] for n in self.input_names}
        buffered = 0
        for batch in iter_batches(
            self.source,
            input_names=self.input_names,
            tokenizer_dir=self.tokenizer_dir,
            batch_size=CALIBRATION_CHUNK,
            sequence_length=self.sequence_length,
        ):
            missing = [n for n in self.input_names if n not in batch.inputs]
            if missing:
                raise BadInput(
                    f"calibration data lacks the model inputs {missing}; the model takes "
                    f"{self.input_names}",
                    field="spec.data.calibration.uri",
                )
            for name in self.input_names:
                pending[name].append(batch.inputs[name])
            buffered += len(batch)
            while buffered >= CALIBRATION_CHUNK:
                joined = {n: np.concatenate(pending[n]) for n in self.input_names}
                chunk = {n: a[:CALIBRATION_CHUNK] for n, a in joined.items()}
                pending = {n: [a[CALIBRATION_CHUNK:]] for n, a in joined.items()}
                buffered -= CALIBRATION_CHUNK
                self.samples_read += CALIBRATION_CHUNK
                yield chunk
        if buffered and self.samples_read == 0:
            self.samples_read = buffered
            yield {n: np.concatenate(pending[n]) for n in self.input_names}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:
            self._batches = self._stream()
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = None
        self.samples_read = 0


def _listed_reader(chunks: list[dict[str, np.ndarray]]) -> Any:
    """`chunks` as ONNX Runtime's CalibrationDataReader."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(chunks)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.left, None)

    return Reader()


_ORT_METHODS = {
    CalibrationMethod.minmax: "MinMax",
    CalibrationMethod.entropy: "Entropy",
    CalibrationMethod.percentile: "Percentile",
}
# What ORT's calibrators take besides the method (quantize_static's CalibPercentile).
_CALIBRATOR_OPTIONS = {CalibrationMethod.percentile: {"percentile": 99.999}}


def calibrate_to_cache(
    source: Path,
    config: QuantizeConfig,
    reader: CalibrationReader,
    op_types: list[str],
    progress: Progress = no_progress,
) -> Path:
    """Activation ranges of `source` on the calibration data, saved as ONNX Runtime's
    calibration cache (`<source>.calibration.json`) for quantize_static.

    ORT's own loop keeps every chunk's activations until the data ends (the histogram
    methods) and a second copy of the weights in memory; here its calibrator gets
    CALIBRATION_WINDOW chunks at a time, merging ranges and histograms between windows, and
    loads the graph only (runners/int8/shapes.py), its session reading the weights from
    their file. The samples calibrated so far are reported to `progress` after each window.
    """
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    from kondense.runners.int8.shapes import calibrator_loads_graph_only

    augmented = source.with_name(source.stem + "-augmented.onnx")
    with calibrator_loads_graph_only():
        calibrator = create_calibrator(
            source,
            op_types,
            augmented_model_path=str(augmented),
            calibrate_method=getattr(OrtMethod, _ORT_METHODS[config.calibration_method]),
            extra_options=_CALIBRATOR_OPTIONS.get(config.calibration_method, {}),
        )
    chunks = iter(reader.get_next, None)
    stage, expected = "quantize: static INT8 calibration, samples", reader.source.samples
    progress(stage, 0, expected)
    while window := list(itertools.islice(chunks, CALIBRATION_WINDOW)):
        calibrator.collect_data(_listed_reader(window))
        progress(stage, reader.samples_read, max(expected, reader.samples_read))
    # The data may hold fewer samples than asked for: what was read is all there is.
    progress(stage, reader.samples_read, reader.samples_read)
    if reader.samples_read == 0:
        raise BadInput(
            "the calibration data produced no samples; check data.calibration.uri",
            field="spec.data.calibration.uri",
        )
    cache = source.with_name(source.name + ".calibration.json")
    save_tensors_data(calibrator.compute_data(), cache)
    del calibrator
    augmented.unlink(missing_ok=True)
    return cache


def quantize_static_int8(
    source: Path,
    target: Path,
    config: QuantizeConfig,
    reader: CalibrationReader,
    *,
    large: bool,
    progress: Progress = no_progress,
) -> None:
    """Static INT8 in QDQ format: S8 weights (per channel), U8 activations from calibration,
    calibrated in bounded windows first (calibrate_to_cache); calibration windows and weights
    quantized are reported to `progress`."""
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from kondense.runners.int8.shapes import quantizer_reloads_in_place
    from kondense.runners.int8.tensor_progress import quantizer_reports_weights

    options: dict[str, Any] = {"MatMulConstBOnly": True, **UNKNOWN_TYPES_ARE_FLOAT}
    present = _present_ops(source)
    op_types = [op for op in STATIC_OPS if op in present]
    excluded = list(config.exclude_nodes or [])
    cache = calibrate_to_cache(source, config, reader, op_types, progress)
    weights = _weights_to_quantize(source, op_types, excluded)
    try:
        with (
            quantizer_reloads_in_place(),
            quantizer_reports_weights(progress, "quantize: static INT8, weight tensors", weights),
        ):
            quantize_static(
                str(source),
                str(target),
                None,
                calibration_cache_path=str(cache),
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                calibrate_method=getattr(OrtMethod, _ORT_METHODS[config.calibration_method]),
                op_types_to_quantize=op_types,
                nodes_to_exclude=excluded,
                use_external_data_format=large,
                extra_options=options,
            )
    finally:
        cache.unlink(missing_ok=True)


# --- fp16 ------------------------------------------------------------------------------------


def fp16_block_list(config: QuantizeConfig) -> list[str]:
    """Op types kept in float32: ORT's ops without fp16 kernels, ours, and the user's."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return sorted({*DEFAULT_OP_BLOCK_LIST, *FP16_EXTRA_BLOCKED, *(config.op_block_list or [])})


def convert_fp16(
    source: Path, target: Path, config: QuantizeConfig, *, progress: Progress = no_progress
) -> None:
    """FP16 weights and compute, float32 inputs/outputs kept when config.keep_io_types; each
    weight converted is reported to `progress`. ONNX Runtime's converter decides the graph;
    the weights follow tensor by tensor (runners/model/float16.py), so memory stays within
    the model's bytes."""
    from kondense.runners.model.float16 import convert_to_float16

    convert_to_float16(
        source,
        target,
        keep_io_types=config.keep_io_types,
        op_block_list=fp16_block_list(config),
        node_block_list=list(config.exclude_nodes or []),
        progress=progress,
        description="quantize: fp16, weight tensors",
    )
