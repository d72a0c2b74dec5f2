"""The baseline and the result measured side by side on this machine: the quality metric on
the evaluation data (or synthetic inputs), latency and throughput, size, parameters, sparsity.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kondense.api.errors import BadInput
from kondense.api.outcome import EvaluationData, Figures, Results
from kondense.api.spec import CompressionJobSpec, DataSource
from kondense.runners.core import Model, Progress

# Evaluation runs in batches of this size unless the model fixes its batch dimension.
EVAL_BATCH = 32
# Baseline and result are timed interleaved (rounds of one, then the other) when the two
# together are at most this big: a noisy neighbour then slows both alike and the speedup stays
# honest on a busy node. Interleaving needs both sessions at once, which costs at most this
# much more memory; larger pairs are timed one after the other, one session alive at a time,
# so a large job's peak stays within 2x its model's bytes (issue #17).
INTERLEAVE_MAX_BYTES = 256 << 20


def _eval_data(
    spec: CompressionJobSpec, signatures: list[Any], assets: Path | None
) -> tuple[EvaluationData, Iterable[Any]]:
    """The evaluation inputs and what they are: the user's data, else built-in inputs that fit
    the model (held-out sentences or generated images), else synthetic ones."""
    from kondense.runners.io import builtin

    fixed_batch = signatures[0].shape[0] if signatures and signatures[0].shape else None
    length = spec.evaluation.sequence_length
    cap = spec.evaluation.samples  # a search screens on a few samples
    # A batch no larger than the cap, so synthetic inputs (whole batches) stay within it.
    batch_size = fixed_batch if isinstance(fixed_batch, int) else min(EVAL_BATCH, cap or EVAL_BATCH)
    source = spec.data.evaluation
    if source is not None:
        if cap is not None and cap < source.samples:
            source = source.model_copy(update={"samples": cap})
        return EvaluationData.user, _user_batches(source, signatures, assets, batch_size, length)
    return builtin.representative_batches(
        _benchmark_signatures(spec, signatures),
        assets,
        split="evaluate",
        batch_size=batch_size,
        sequence_length=length,
        samples=cap,
    )


def _user_batches(
    source: DataSource,
    signatures: list[Any],
    tokenizer_dir: Path | None,
    batch_size: int,
    length: int,
) -> Iterator[Any]:
    from kondense.runners.io import data

    name = Path(source.uri).name
    for batch in data.iter_batches(
        source,
        input_names=[s.name for s in signatures],
        tokenizer_dir=tokenizer_dir,
        batch_size=batch_size,
        sequence_length=length,
    ):
        data.check_batch_fits(batch, signatures, name)
        yield batch


def check_data(spec: CompressionJobSpec, signatures: list[Any], tokenizer_dir: Path | None) -> None:
    """Read the first batch of the evaluation and calibration data before any long step runs.

    A data file that does not fit the model fails the job in seconds, not after compression.
    """
    from kondense.runners.io import data

    names = [s.name for s in signatures]
    for field, source in (
        ("evaluation", spec.data.evaluation),
        ("calibration", spec.data.calibration),
    ):
        if source is None:
            continue
        first = source.model_copy(update={"samples": 1})
        try:
            for batch in data.iter_batches(
                first,
                input_names=names,
                tokenizer_dir=tokenizer_dir,
                batch_size=1,
                sequence_length=spec.evaluation.sequence_length,
            ):
                data.check_batch_fits(batch, signatures, Path(source.uri).name)
        except BadInput as error:
            if error.field is not None:
                raise
            # The message names the file; the field says which of the job's data it is.
            raise BadInput(str(error), field=f"spec.data.{field}.uri") from error


def _benchmark_signatures(spec: CompressionJobSpec, signatures: list[Any]) -> list[Any]:
    """The model's inputs, with spec.model.inputs' shapes where the user gave them."""
    from kondense.runners.io import data

    declared = {t.name: t for t in spec.model.inputs or []}
    unknown = sorted(set(declared) - {s.name for s in signatures})
    if unknown:
        raise BadInput(
            f"spec.model.inputs names {unknown}, but the model's inputs are "
            f"{[s.name for s in signatures]}; use the model's input names",
            field="spec.model.inputs",
        )
    fixed = []
    for signature in signatures:
        tensor = declared.get(signature.name)
        if tensor is not None:
            # The batch dimension stays free so evaluation.batchSize applies to it.
            shape = (signature.shape[0], *tensor.shape[1:])
            signature = data.InputSignature(signature.name, shape, signature.dtype)
        fixed.append(signature)
    return fixed


def measure_pair(
    baseline: Model,
    result: Model,
    spec: CompressionJobSpec,
    signatures: list[Any],
    tokenizer_dir: Path | None,
    progress: Progress,
) -> Results:
    """Baseline and result evaluated and benchmarked on this machine, with the same data and
    settings: the baseline first, then the result.

    Each is evaluated with one session alive at a time: a session holds about the model's
    float32 bytes (on a CPU an fp16 model's too: ONNX Runtime turns its weights back to
    float32 there), so two at once would be the largest part of a large job's peak memory
    (issue #17). Timing interleaves the two while they are small together
    (INTERLEAVE_MAX_BYTES) and takes one after the other beyond.

    That float32 copy is kept: with no fp16 MatMul on the CPU, ONNX Runtime puts Casts before
    it and folds them into float32 weights. Without the folding (`disabled_optimizers`) a
    session of a 1.07 GB fp16 model held more, not less (2.2 GB instead of 1.1 GB: the fp16
    weights plus each run's casts), and each run would pay casts no deployment pays.
    """
    from kondense.runners.io import data
    from kondense.runners.measure import evaluate
    from kondense.runners.measure.benchmark import benchmark_models, benchmark_session
    from kondense.runners.measure.inference import open_session, pick_device, resolve_threads
    from kondense.runners.memory_budget import release_freed_memory

    settings = spec.evaluation
    threads = resolve_threads(settings.threads)
    device = pick_device(prefer_gpu=True)
    evaluation_data, batches = _eval_data(spec, signatures, tokenizer_dir)
    listed = evaluate.batch_list(batches)
    (inputs,) = data.synthetic_batches(
        _benchmark_signatures(spec, signatures),
        batches=1,
        batch_size=settings.batch_size,
        sequence_length=settings.sequence_length,
        vocab=data.vocab_size(tokenizer_dir),
    )
    interleave = sum(_bytes(m.path) for m in (baseline, result)) <= INTERLEAVE_MAX_BYTES
    outputs, timings = [], []
    for role, model in (("baseline", baseline), ("result", result)):
        progress(f"{role}: evaluate on {evaluation_data.value} inputs", 0, None)
        session = open_session(model.path, threads=threads, device=device)
        outputs.append(evaluate.model_outputs(session, listed, task=spec.model.task))
        if not interleave:
            progress(f"{role}: benchmark", 0, None)
            timings.append(
                benchmark_session(
                    session,
                    inputs.inputs,
                    threads=threads,
                    device=device,
                    warmup=settings.warmup,
                    runs=settings.runs,
                )
            )
        del session
        release_freed_memory()  # the baseline's pages are not resident beneath the result's
    if interleave:
        progress("benchmark: baseline and result, interleaved", 0, None)
        timings = benchmark_models(
            [baseline.path, result.path],
            inputs.inputs,
            threads=threads,
            device=device,
            warmup=settings.warmup,
            runs=settings.runs,
        )
    evaluation = evaluate.score(*outputs, task=spec.model.task, metric=settings.metric)
    base_time, result_time = timings
    with_gzip = bool(spec.steps_named("prune"))
    base_figures = _figures(baseline.path, base_time, evaluation.baseline, with_gzip)
    result_figures = _figures(result.path, result_time, evaluation.compressed, with_gzip)
    is_text = any(s.dtype.kind in "iu" for s in signatures)
    return Results(
        baseline=base_figures,
        compressed=result_figures,
        metric_name=evaluation.metric_name,
        metric_drop=round(evaluation.drop, 6),
        size_ratio=round(base_figures.bytes / max(result_figures.bytes, 1), 4),
        speedup=round(base_time.latency_ms_p50 / max(result_time.latency_ms_p50, 1e-9), 4),
        device=str(device),
        threads=threads,
        batch_size=settings.batch_size,
        sequence_length=settings.sequence_length if is_text else None,
        evaluation_data=evaluation_data,
        evaluation_samples=evaluation.samples,
        cpu=_cpu_label(),
    )


def _cpu_label() -> str:
    """'<model> (<int8 dot product>)': what a search compares to say candidates' CPUs differ."""
    from kondense.runners.measure.cpu import cpu_info

    info = cpu_info()
    return f"{info.model} ({info.int8_dot_product})"


def _bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in model_files(path))


def model_files(path: Path) -> list[Path]:
    """The ONNX file and the external-data files it references."""
    from kondense.runners.model import onnx_files

    return [path, *onnx_files.external_data_files(path)]


def _weight_stats(path: Path) -> tuple[int, float]:
    """Parameter count and fraction of zero weights, from the graph's initializers.

    Quantization scales and zero points are bookkeeping, not parameters; they are left out,
    as are integer shape constants.
    """
    import onnx

    from kondense.runners.model import onnx_files

    model = onnx.load(str(path), load_external_data=False)
    parameters = zeros = 0
    for tensor in model.graph.initializer:
        if tensor.name.endswith(("_scale", "_zero_point")):
            continue
        array = onnx_files.read_tensor(tensor, path.parent)
        # Weights are float or (quantized) 8-bit; int64/int32 initializers are shapes and indices.
        if not (array.dtype.kind == "f" or array.dtype.itemsize == 1) or array.ndim == 0:
            continue
        parameters += array.size
        if array.ndim >= 2:
            zeros += int((array == 0).sum())
    return parameters, (zeros / parameters if parameters else 0.0)


def _figures(path: Path, timing: Any, metric: float, with_gzip: bool) -> Figures:
    files = model_files(path)
    parameters, sparsity = _weight_stats(path)
    compressed = None
    if with_gzip:
        # What unstructured sparsity buys only shows once the file is compressed.
        compressed = sum(len(zlib.compress(f.read_bytes(), 6)) for f in files)
    return Figures(
        bytes=sum(f.stat().st_size for f in files),
        parameters=parameters,
        sparsity=round(sparsity, 6),
        compressed_bytes=compressed,
        latency_ms_p50=round(timing.latency_ms_p50, 4),
        latency_ms_p95=round(timing.latency_ms_p95, 4),
        throughput=round(timing.throughput, 3),
        metric=round(metric, 6),
    )
