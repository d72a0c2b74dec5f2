"""quantize: INT8 dynamic, INT8 static (QDQ, calibrated) and FP16, with ONNX Runtime's tools.

ONNX Runtime pitfalls handled here rather than passed to the user:
- shape inference: `quant_pre_process` runs first; symbolic shape inference fails on some
  com.microsoft fused ops, so it is retried without it, then skipped, and what happened is
  reported;
- fused ops from transformer fusion (Attention, EmbedLayerNormalization) are quantized by
  their integer counterparts, and activation x activation MatMuls (attention scores) stay in
  float, which is what keeps transformer embeddings accurate;
- models over 2 GB are written with external data at every stage.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kondense.api.errors import BadInput, KondenseError
from kondense.api.spec import (
    CalibrationMethod,
    DataSource,
    QuantizeConfig,
    QuantizeMode,
)
from kondense.runners.core import Model, StepContext
from kondense.runners.model import MODEL_FILE, onnx_files
from kondense.runners.model.assets import tokenizer_dir

if TYPE_CHECKING:
    import numpy as np
    import onnx

log = logging.getLogger(__name__)

# Static calibration reads this many samples at most, in chunks of CALIBRATION_CHUNK.
CALIBRATION_MAX_SAMPLES = 1000
CALIBRATION_MIN_SAMPLES = 100
CALIBRATION_CHUNK = 16
# Ops kept in float32 by fp16 besides ONNX Runtime's list of ops without fp16 kernels:
# reductions/normalisations whose float16 range overflows on long sequences.
FP16_EXTRA_BLOCKED = ("ReduceSum", "ReduceMean", "Pow", "Sqrt", "Erf", "Softmax")
# Dynamic INT8 quantizes these ops (integer kernels exist on every CPU build); the fused
# Attention and EmbedLayerNormalization of transformer fusion included. The embedding Gather
# is included because the word embeddings are half of a small BERT's bytes.
DYNAMIC_OPS = ("MatMul", "Attention", "EmbedLayerNormalization", "Gather", "Conv")
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
        convert_fp16(model.path, target, config)
        ctx.report("quantization", "fp16")
        return model.with_(path=target)

    if config.mode is QuantizeMode.auto:
        from kondense.runners.int8.auto import quantize_auto

        return quantize_auto(model, config, ctx)

    ctx.progress("quantize: shape inference", 0, 2)
    prepared, how = preprocess(model.path, ctx.workdir / "preprocessed.onnx", large=large)
    ctx.report("quantizePreprocess", how)
    if config.mode is QuantizeMode.dynamic:
        ctx.progress("quantize: dynamic INT8", 1, 2)
        quantize_dynamic_int8(prepared, target, config, large=large)
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
        quantize_static_int8(prepared, target, config, reader, large=large)
        ctx.report("calibrationSamples", reader.samples_read)
        if reader.samples_read < CALIBRATION_MIN_SAMPLES:
            ctx.report(
                "calibrationWarning",
                f"only {reader.samples_read} calibration samples; 100-1000 representative "
                "samples give stable activation ranges",
            )
    prepared.unlink(missing_ok=True)
    ctx.report("quantization", config.mode.value)
    return model.with_(path=target)


# --- shared ----------------------------------------------------------------------------------


def preprocess(source: Path, target: Path, *, large: bool) -> tuple[Path, str]:
    """ORT's quantization pre-processing (optimization + shape inference), degrading gracefully.

    Returns the model to quantize and which pre-processing ran.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ORT's own optimization pass is skipped: it fuses MatMul+Add into Gemm (no dynamic INT8
    # kernel) and renames nodes, which would break excludeNodes; the optimize step and ONNX
    # Runtime at load time do that work instead.
    attempts = (
        ("symbolic and ONNX shape inference", {"skip_optimization": True}),
        # Symbolic shape inference has no rules for some com.microsoft ops.
        ("ONNX shape inference", {"skip_optimization": True, "skip_symbolic_shape": True}),
    )
    for description, options in attempts:
        try:
            with scratch_cwd(target.parent):
                quant_pre_process(
                    str(source.resolve()),
                    str(target.resolve()),
                    save_as_external_data=large,
                    all_tensors_to_one_file=True,
                    external_data_location=target.name + ".data" if large else None,
                    **options,
                )
            return target, description
        except Exception as error:  # each ORT pass raises its own types
            log.info("quant_pre_process (%s) failed: %s", description, error)
    import onnx

    # A copy, so later in-place rewrites (Gemm -> MatMul) never touch the input model.
    onnx_files.save_onnx(onnx.load_model(str(source), load_external_data=True), target)
    return target, "none (shape inference failed; quantizing the model as it is)"


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


# --- dynamic ---------------------------------------------------------------------------------


def quantize_dynamic_int8(
    source: Path, target: Path, config: QuantizeConfig, *, large: bool
) -> None:
    """Dynamic INT8: signed 8-bit weights (per channel by default), activations at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = gemm_as_matmul(source)
    present = _present_ops(source)
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=config.per_channel,
        reduce_range=False,
        op_types_to_quantize=[op for op in DYNAMIC_OPS if op in present],
        nodes_to_exclude=list(config.exclude_nodes or []),
        use_external_data_format=large,
        extra_options={
            # Attention scores (activation x activation MatMul) stay float: quantizing them
            # both at run time is where dynamic INT8 loses most accuracy on transformers.
            "MatMulConstBOnly": True,
            **UNKNOWN_TYPES_ARE_FLOAT,
        },
    )


def gemm_as_matmul(path: Path) -> Path:
    """Rewrite Gemm (how torch exports nn.Linear) as MatMul + Add, in place.

    Dynamic INT8 has no integer Gemm, so a classifier head exported as Gemm would otherwise
    stay in float32 and keep most of a small CNN's bytes.
    """
    import onnx
    from onnxruntime.quantization.onnx_model import ONNXModel

    model = onnx.load_model(str(path), load_external_data=True)
    if not any(n.op_type == "Gemm" for n in model.graph.node):
        return path
    wrapped = ONNXModel(model)
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


def _calibration_reader(reader: CalibrationReader) -> Any:
    """`reader` as ONNX Runtime's CalibrationDataReader subclass (it checks the type)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, Any] | None:
            return reader.get_next()

        def rewind(self) -> None:
            reader.rewind()

    return Reader()


def quantize_static_int8(
    source: Path,
    target: Path,
    config: QuantizeConfig,
    reader: CalibrationReader,
    *,
    large: bool,
) -> None:
    """Static INT8 in QDQ format: S8 weights (per channel), U8 activations from calibration."""
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    methods = {
        CalibrationMethod.minmax: OrtMethod.MinMax,
        CalibrationMethod.entropy: OrtMethod.Entropy,
        CalibrationMethod.percentile: OrtMethod.Percentile,
    }
    options: dict[str, Any] = {"MatMulConstBOnly": True, **UNKNOWN_TYPES_ARE_FLOAT}
    present = _present_ops(source)
    if config.calibration_method is CalibrationMethod.percentile:
        options["CalibPercentile"] = 99.999
    try:
        quantize_static(
            str(source),
            str(target),
            _calibration_reader(reader),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=methods[config.calibration_method],
            op_types_to_quantize=[op for op in STATIC_OPS if op in present],
            nodes_to_exclude=list(config.exclude_nodes or []),
            use_external_data_format=large,
            extra_options=options,
        )
    except KondenseError:
        raise
    except Exception as error:
        if reader.samples_read == 0:
            raise BadInput(
                "the calibration data produced no samples; check data.calibration.uri",
                field="spec.data.calibration.uri",
            ) from error
        raise
    if reader.samples_read == 0:
        raise BadInput(
            "the calibration data produced no samples; check data.calibration.uri",
            field="spec.data.calibration.uri",
        )


# --- fp16 ------------------------------------------------------------------------------------


def fp16_block_list(config: QuantizeConfig) -> list[str]:
    """Op types kept in float32: ORT's ops without fp16 kernels, ours, and the user's."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return sorted({*DEFAULT_OP_BLOCK_LIST, *FP16_EXTRA_BLOCKED, *(config.op_block_list or [])})


def convert_fp16(source: Path, target: Path, config: QuantizeConfig) -> None:
    """FP16 weights and compute, float32 inputs/outputs kept when config.keep_io_types."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model: onnx.ModelProto = onnx.load_model(str(source), load_external_data=True)
    converted = convert_float_to_float16(
        model,
        keep_io_types=config.keep_io_types,
        op_block_list=fp16_block_list(config),
        node_block_list=list(config.exclude_nodes or []) or None,
        # Shape inference by path only works under 2 GB; large models skip it.
        disable_shape_infer=onnx_files.weight_bytes(model) > onnx_files.EXTERNAL_DATA_THRESHOLD,
    )
    # keep_io_types appends the input Casts at the end of the node list; ONNX Runtime does not
    # mind, but onnx.checker (and every tool that validates) requires topological order.
    wrapped = OnnxModel(converted)
    wrapped.topological_sort()
    onnx_files.save_onnx(wrapped.model, target)
