"""The recipe runner: one CompressionJob from model URI to published artifacts and report.

fetch the model -> check it -> baseline (the original as ONNX FP32) -> steps in order ->
evaluate and benchmark baseline and result side by side -> gates -> model.onnx, assets and
report.json -> publish. Used by `kondense run` locally and inside runner pods alike.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kondense.api.errors import BadInput, ResultRejected
from kondense.api.outcome import Figures, Report, Results, StepTiming
from kondense.api.spec import (
    CompressionJob,
    CompressionJobSpec,
    ExportConfig,
    ModelFormat,
    SpecModel,
    Step,
)
from kondense.api.steps import ONNX_STEPS
from kondense.runners.core import Model, Progress, StepContext, no_progress
from kondense.runners.io import storage
from kondense.runners.measure.gates import fp16_cpu_verdict, gate_problems
from kondense.runners.model import MODEL_FILE
from kondense.runners.model.assets import copy_assets, hf_assets_dir
from kondense.runners.steps import load_step

# Evaluation runs in batches of this size unless the model fixes its batch dimension.
EVAL_BATCH = 32
SYNTHETIC_SAMPLES = 64


class Rejected(ResultRejected):
    """The result missed a gate; it was still published, with `report` saying accepted: false."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class _Run:
    """What one run accumulates: step timings and the notes steps report about themselves."""

    progress: Progress
    timings: list[StepTiming] = field(default_factory=list)

    def record(self, name: str, seconds: float, notes: dict[str, Any]) -> None:
        clean = {k: v if isinstance(v, int | float | str) else str(v) for k, v in notes.items()}
        self.timings.append(StepTiming(name=name, seconds=round(seconds, 3), notes=clean or None))


def resolve_uris(spec: CompressionJobSpec, base_dir: Path | None) -> CompressionJobSpec:
    """`spec` with relative local paths (model, data, output, students) made absolute."""

    def fix(obj: SpecModel | None) -> Any:
        if obj is None:
            return None
        return obj.model_copy(update={"uri": storage.resolve(obj.uri, base_dir)})  # type: ignore[attr-defined]

    data = spec.data.model_copy(
        update={
            "calibration": fix(spec.data.calibration),
            "evaluation": fix(spec.data.evaluation),
            "training": fix(spec.data.training),
        }
    )
    return spec.model_copy(
        update={
            "model": fix(spec.model),
            "data": data,
            "output": fix(spec.output),
            "steps": [_resolve_student(step, base_dir) for step in spec.steps],
        }
    )


def _resolve_student(step: Step, base_dir: Path | None) -> Step:
    """A distill step's student.uri, like the model's, is relative to the manifest's folder."""
    if step.distill is None or step.distill.student.uri is None:
        return step
    student = step.distill.student.model_copy(
        update={"uri": storage.resolve(step.distill.student.uri, base_dir)}
    )
    return step.model_copy(update={"distill": step.distill.model_copy(update={"student": student})})


def run_job(
    job: CompressionJob,
    output_uri: str | None = None,
    progress: Progress = no_progress,
    *,
    base_dir: Path | None = None,
) -> Report:
    """Run `job` and publish its artifacts and report.json to `output_uri` (or spec.output.uri).

    Relative local paths in the spec resolve against `base_dir` (the manifest's folder).
    Returns the report of an accepted result. Raises BadInput for wrong input (nothing is
    published) and Rejected when a gate failed (published, marked accepted: false).
    """
    from kondense.runners.io import data

    spec = resolve_uris(job.spec, base_dir)
    target = storage.resolve(output_uri, Path.cwd()) if output_uri else spec.output.uri
    if storage.scheme(target) in {"https", "http"}:
        raise BadInput("spec.output.uri: https:// is read only; use a path, pvc:// or s3://")
    storage.is_local(target)  # refuses unknown schemes before any work
    run = _Run(progress)
    with tempfile.TemporaryDirectory(prefix="kondense-") as scratch:
        work = Path(scratch)
        progress("fetch model", 0, None)
        original = _load_model(spec, work)
        baseline, export_seconds = _baseline(original, spec, work, run)
        signatures = data.onnx_input_signatures(baseline.path)
        _check_data(spec, signatures, hf_assets_dir(baseline, original))
        result = _run_steps(original, baseline, export_seconds, spec, work, run)
        results = _measure(baseline, result, original, spec, signatures, run)
        out = work / "output"
        write_output(result, original, out)
        problems = gate_problems(results, spec)
        accepted = not problems
        note = fp16_cpu_verdict(results, spec)
        verdict = "; ".join([*problems, *([note] if note else [])]) or None
        results = results.model_copy(update={"accepted": accepted, "verdict": verdict})
        report = Report(artifacts=storage.describe(out, target), results=results, steps=run.timings)
        (out / storage.REPORT_NAME).write_text(json.dumps(report.to_json_dict(), indent=2) + "\n")
        progress("publish", 0, None)
        report = report.model_copy(update={"artifacts": storage.publish(out, target)})
    if not accepted:
        raise Rejected(
            f"result rejected: {results.verdict}; the artifact is kept at {target}, "
            "marked accepted: false in report.json",
            report,
        )
    return report


# --- model in ------------------------------------------------------------------------------


def _load_model(spec: CompressionJobSpec, work: Path) -> Model:
    from kondense.runners.model import formats, onnx_files

    path, detected = formats.locate_model(storage.fetch(spec.model.uri, work / "input"))
    declared = spec.model.format
    if declared is not None and declared != detected:
        raise BadInput(
            f"{path.name} is a {detected.value} model but spec.model.format says "
            f"{declared.value}; fix the format or omit it to have it detected",
            field="spec.model.format",
        )
    if detected == ModelFormat.onnx:
        onnx_files.check_onnx(path)
    assets = path if detected == ModelFormat.huggingface else None
    return Model(path=path, format=detected, assets=assets)


def _export(
    model: Model, config: ExportConfig, spec: CompressionJobSpec, work: Path, run: _Run
) -> Model:
    exports = work / "exports"
    exports.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=exports))
    ctx = StepContext(spec=spec, workdir=workdir, progress=run.progress)
    return load_step("export")(model, config, ctx)


def _baseline(
    original: Model, spec: CompressionJobSpec, work: Path, run: _Run
) -> tuple[Model, float]:
    """The original as ONNX FP32: the model itself, or its export with the recipe's settings."""
    if original.format == ModelFormat.onnx:
        return original, 0.0
    first = spec.steps[0]
    config = first.export if first.export is not None else ExportConfig()
    run.progress("export baseline to ONNX", 0, None)
    started = time.perf_counter()
    baseline = _export(original, config, spec, work, run)
    return baseline, time.perf_counter() - started


def _run_steps(
    original: Model,
    baseline: Model,
    export_seconds: float,
    spec: CompressionJobSpec,
    work: Path,
    run: _Run,
) -> Model:
    current = original
    total = len(spec.steps)
    for index, step in enumerate(spec.steps):
        name = step.name
        run.progress(f"step {index + 1}/{total}: {name}", index, total)
        if name == "export" and current is original and original.format != ModelFormat.onnx:
            # The baseline already is this export, with the same settings: reuse it.
            run.record("export", export_seconds, {"reusedFor": "baseline"})
            current = baseline
            continue
        if name in ONNX_STEPS and current is original and original.format != ModelFormat.onnx:
            # The baseline is the original exported with default settings: no second export.
            run.record("export", export_seconds, {"auto": f"baseline export reused before {name}"})
            current = baseline
        elif name in ONNX_STEPS and current.format != ModelFormat.onnx:
            current = _auto_export(current, spec, work, run, before=name)
        notes: dict[str, Any] = {}
        workdir = work / "steps" / f"{index:02d}-{name}"
        workdir.mkdir(parents=True)
        ctx = StepContext(
            spec=spec, workdir=workdir, progress=run.progress, report=notes.__setitem__
        )
        started = time.perf_counter()
        current = load_step(name)(current, step.config, ctx)
        run.record(name, time.perf_counter() - started, notes)
    run.progress("steps done", total, total)
    if current.format != ModelFormat.onnx:
        current = _auto_export(current, spec, work, run, before="evaluation")
    return current


def _auto_export(
    current: Model, spec: CompressionJobSpec, work: Path, run: _Run, *, before: str
) -> Model:
    started = time.perf_counter()
    exported = _export(current, ExportConfig(), spec, work, run)
    run.record(
        "export",
        time.perf_counter() - started,
        {"auto": f"exported to ONNX with default settings before {before}"},
    )
    return exported


# --- measurement ---------------------------------------------------------------------------


def _eval_batches(
    spec: CompressionJobSpec, signatures: list[Any], tokenizer_dir: Path | None
) -> Iterator[Any]:
    from kondense.runners.io import data

    names = [s.name for s in signatures]
    fixed_batch = signatures[0].shape[0] if signatures and signatures[0].shape else None
    batch_size = fixed_batch if isinstance(fixed_batch, int) else EVAL_BATCH
    length = spec.evaluation.sequence_length
    source = spec.data.evaluation
    if source is not None:
        name = Path(source.uri).name
        for batch in data.iter_batches(
            source,
            input_names=names,
            tokenizer_dir=tokenizer_dir,
            batch_size=batch_size,
            sequence_length=length,
        ):
            data.check_batch_fits(batch, signatures, name)
            yield batch
        return
    yield from data.synthetic_batches(
        _benchmark_signatures(spec, signatures),
        batches=max(1, SYNTHETIC_SAMPLES // batch_size),
        batch_size=batch_size,
        sequence_length=length,
        vocab=data.vocab_size(tokenizer_dir),
    )


def _check_data(
    spec: CompressionJobSpec, signatures: list[Any], tokenizer_dir: Path | None
) -> None:
    """Read the first batch of the evaluation and calibration data before any long step runs.

    A data file that does not fit the model fails the job in seconds, not after compression.
    """
    from kondense.runners.io import data

    names = [s.name for s in signatures]
    for source in (spec.data.evaluation, spec.data.calibration):
        if source is None:
            continue
        first = source.model_copy(update={"samples": 1})
        for batch in data.iter_batches(
            first,
            input_names=names,
            tokenizer_dir=tokenizer_dir,
            batch_size=1,
            sequence_length=spec.evaluation.sequence_length,
        ):
            data.check_batch_fits(batch, signatures, Path(source.uri).name)


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


def _measure(
    baseline: Model,
    result: Model,
    original: Model,
    spec: CompressionJobSpec,
    signatures: list[Any],
    run: _Run,
) -> Results:
    from kondense.runners.io import data
    from kondense.runners.measure import evaluate
    from kondense.runners.measure.benchmark import benchmark_models
    from kondense.runners.measure.inference import pick_device, resolve_threads

    settings = spec.evaluation
    threads = resolve_threads(settings.threads)
    device = pick_device(prefer_gpu=True)
    tokenizer_dir = hf_assets_dir(result, baseline, original)
    run.progress("evaluate", 0, None)
    evaluation = evaluate.evaluate_pair(
        baseline.path,
        result.path,
        _eval_batches(spec, signatures, tokenizer_dir),
        task=spec.model.task,
        metric=settings.metric,
        threads=threads,
        device=device,
    )
    run.progress("benchmark", 0, None)
    (inputs,) = data.synthetic_batches(
        _benchmark_signatures(spec, signatures),
        batches=1,
        batch_size=settings.batch_size,
        sequence_length=settings.sequence_length,
        vocab=data.vocab_size(tokenizer_dir),
    )
    base_time, result_time = benchmark_models(
        [baseline.path, result.path],
        inputs.inputs,
        threads=threads,
        device=device,
        warmup=settings.warmup,
        runs=settings.runs,
    )
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
    )


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
    from onnx import numpy_helper

    model = onnx.load(str(path))
    parameters = zeros = 0
    for tensor in model.graph.initializer:
        if tensor.name.endswith(("_scale", "_zero_point")):
            continue
        array = numpy_helper.to_array(tensor)
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


# --- gates and output ----------------------------------------------------------------------


def write_output(result: Model, original: Model, out: Path) -> None:
    """model.onnx (+ external data) and the tokenizer/config files a consumer needs."""
    from kondense.runners.model import onnx_files

    out.mkdir(parents=True)
    if len(model_files(result.path)) == 1:
        shutil.copyfile(result.path, out / MODEL_FILE)
    else:
        import onnx

        onnx_files.save_onnx(onnx.load(str(result.path)), out / MODEL_FILE, external=True)
    copy_assets(out, result, original)
