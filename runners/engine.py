"""The recipe runner: one CompressionJob from model URI to published artifacts and report.

fetch the model -> check it -> baseline (the original as ONNX FP32) -> steps in order ->
evaluate and benchmark baseline and result side by side -> gates -> model.onnx, assets, the
model card (README.md) and report.json -> publish. Used by `kondense run` locally and inside
runner pods alike.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kondense.api.errors import BadInput, ResultRejected
from kondense.api.outcome import Report, StepTiming
from kondense.api.spec import (
    CompressionJob,
    CompressionJobSpec,
    ExportConfig,
    ModelFormat,
)
from kondense.runners.core import Model, Progress, StepContext, no_progress
from kondense.runners.environment import describe_environment
from kondense.runners.io import storage
from kondense.runners.measure.gates import evaluation_note, fp16_cpu_verdict, gate_problems
from kondense.runners.measure.side_by_side import check_data, measure_pair, model_files
from kondense.runners.memory_budget import Budget
from kondense.runners.model import MODEL_FILE
from kondense.runners.model.assets import check_hf_assets, copy_assets, hf_assets_dir
from kondense.runners.model_card import CARD_NAME, base_model, model_card
from kondense.runners.plan import Plan, make_plan, resolve_uris
from kondense.runners.steps import RUNS


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
    cap = spec.storage.max_download_bytes if spec.storage is not None else None
    with tempfile.TemporaryDirectory(prefix="kondense-") as scratch, storage.download_cap(cap):
        work = Path(scratch)
        progress("fetch model", 0, None)
        original = _load_model(spec, work)
        Budget.here().check(_model_bytes(original.path), original.format)
        plan = make_plan(spec, original.format)
        baseline, export_seconds = _baseline(original, plan, spec, work, run)
        signatures = data.onnx_input_signatures(baseline.path)
        check_data(spec, signatures, hf_assets_dir(baseline, original))
        result = _run_steps(original, baseline, export_seconds, plan, spec, work, run)
        tokenizer_dir = hf_assets_dir(result, baseline, original)
        results = measure_pair(baseline, result, spec, signatures, tokenizer_dir, run.progress)
        out = work / "output"
        write_output(result, original, out)
        problems = gate_problems(results, spec)
        accepted = not problems
        notes = [n for n in (evaluation_note(results, spec), fp16_cpu_verdict(results, spec)) if n]
        verdict = "; ".join([*problems, *notes]) or None
        results = results.model_copy(update={"accepted": accepted, "verdict": verdict})
        report = Report(results=results, steps=run.timings, environment=describe_environment())
        base = base_model(spec, tokenizer_dir)
        (out / CARD_NAME).write_text(model_card(job.name, spec, report, base))
        report = report.model_copy(update={"artifacts": storage.describe(out, target)})
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
    from kondense.runners.model import architecture, formats, onnx_files

    try:
        fetched = storage.fetch(spec.model.uri, work / "input")
    except BadInput as error:
        if error.field is not None:
            raise
        raise BadInput(str(error), field="spec.model.uri") from error
    path, detected = formats.locate_model(fetched)
    declared = spec.model.format
    if declared is not None and declared != detected:
        raise BadInput(
            f"{path.name} is a {detected.value} model but spec.model.format says "
            f"{declared.value}; fix the format or omit it to have it detected",
            field="spec.model.format",
        )
    if detected == ModelFormat.onnx:
        onnx_files.check_onnx(path)
    if detected == ModelFormat.huggingface:
        check_hf_assets(path)  # a tokenizer.json linking to /proc/self/environ: refused now
    assets = path if detected == ModelFormat.huggingface else None
    module = architecture.source_module(path, detected, spec.model)  # safetensors: built here
    return Model(path=path, format=detected, module=module, assets=assets)


def _model_bytes(path: Path) -> int:
    """Bytes of the fetched model: an ONNX file with its external data, or every file of it."""
    from kondense.runners.model import onnx_files

    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if path.suffix == ".onnx":
        return onnx_files.onnx_size_bytes(path)
    return path.stat().st_size


def _export(
    model: Model, config: ExportConfig, spec: CompressionJobSpec, work: Path, run: _Run
) -> Model:
    exports = work / "exports"
    exports.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=exports))
    ctx = StepContext.for_spec(spec, workdir, progress=run.progress)
    return RUNS["export"](model, config, ctx)


def _baseline(
    original: Model, plan: Plan, spec: CompressionJobSpec, work: Path, run: _Run
) -> tuple[Model, float]:
    """The original as ONNX FP32: the model itself, or its export with the recipe's settings."""
    if plan.baseline_export is None:
        return original, 0.0
    run.progress("export baseline to ONNX", 0, None)
    started = time.perf_counter()
    baseline = _export(original, plan.baseline_export, spec, work, run)
    return baseline, time.perf_counter() - started


def _run_steps(
    original: Model,
    baseline: Model,
    export_seconds: float,
    plan: Plan,
    spec: CompressionJobSpec,
    work: Path,
    run: _Run,
) -> Model:
    current = original
    total = len(plan.steps)
    for index, step in enumerate(plan.steps):
        name = step.name
        run.progress(f"step {index + 1}/{total}: {name}", index, total)
        if step.reuses_baseline:
            run.record(name, export_seconds, step.reasons)
            current = baseline
            continue
        notes: dict[str, Any] = dict(step.reasons)
        workdir = work / "steps" / f"{index:02d}-{name}"
        workdir.mkdir(parents=True)
        ctx = StepContext.for_spec(spec, workdir, progress=run.progress, report=notes.__setitem__)
        started = time.perf_counter()
        current = RUNS[name](current, step.config, ctx)
        run.record(name, time.perf_counter() - started, notes)
    run.progress("steps done", total, total)
    return current


# --- output --------------------------------------------------------------------------------


def write_output(result: Model, original: Model, out: Path) -> None:
    """model.onnx (+ external data) and the tokenizer/config files a consumer needs."""
    from kondense.runners.model import onnx_files

    out.mkdir(parents=True)
    if len(model_files(result.path)) == 1:
        shutil.copyfile(result.path, out / MODEL_FILE)
    else:
        import onnx

        # The weights are copied file to file, never loaded.
        graph = onnx.load(str(result.path), load_external_data=False)
        onnx_files.save_beside_data(graph, result.path, out / MODEL_FILE)
    copy_assets(out, result, original)
