"""The plan: what will run, in which order, with every automatic choice made explicit.

Before anything runs, the recipe is settled into steps whose configs say exactly what each
step does, each automatic choice with its reason:
- an export is inserted before an ONNX step that would get a torch model (reusing the
  baseline's export when nothing has changed the model yet), and after the last step when
  the result is still a torch model;
- optimize before a quantize step saves the basic level only, and skips transformer fusion
  (under `auto`) before INT8.
Steps then look at their own config only; `kondense plan job.yaml` prints the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kondense.api.spec import (
    CompressionJobSpec,
    ExportConfig,
    ModelFormat,
    OptimizeConfig,
    OptimizeLevel,
    QuantizeConfig,
    QuantizeMode,
    SpecModel,
    Step,
    TransformerFusion,
)
from kondense.api.steps import STEPS, ModelInput
from kondense.runners.io import storage


def resolve_uris(spec: CompressionJobSpec, base_dir: Path | None) -> CompressionJobSpec:
    """`spec` with relative local paths (model, data, output, students) made absolute."""
    return spec.with_uris(lambda uri: storage.resolve(uri, base_dir))


# Planned formats of a model that is not on this machine yet, by file name.
_SUFFIX_FORMATS = {
    ".onnx": ModelFormat.onnx,
    ".pt2": ModelFormat.exported_program,
    ".ts": ModelFormat.torchscript,
    ".safetensors": ModelFormat.safetensors,
}


def planned_format(spec: CompressionJobSpec) -> tuple[ModelFormat, str]:
    """The model's format for planning, and how it was known: declared, detected from the
    local file, or guessed from the name of a remote one (the run detects it when fetched)."""
    if spec.model.format is not None:
        return spec.model.format, "declared"
    if storage.is_local(spec.model.uri):
        from kondense.runners.model.formats import locate_model

        path = storage.local_path(spec.model.uri)
        if path.exists():
            return locate_model(path)[1], "detected"
    suffix = Path(spec.model.uri.rstrip("/")).suffix.lower()
    return _SUFFIX_FORMATS.get(
        suffix, ModelFormat.huggingface
    ), "from its name; detected when fetched"


@dataclass(frozen=True)
class PlannedStep:
    """One step as it will run. `reasons` are the automatic choices, recorded in the report
    as the step's notes; `reuses_baseline` marks an export whose result is the baseline's."""

    name: str
    config: SpecModel
    reasons: dict[str, str] = field(default_factory=dict)
    reuses_baseline: bool = False


@dataclass(frozen=True)
class Plan:
    # How the original becomes the FP32 ONNX baseline; None when it already is ONNX.
    baseline_export: ExportConfig | None
    steps: tuple[PlannedStep, ...]


def make_plan(spec: CompressionJobSpec, model_format: ModelFormat) -> Plan:
    """The plan for `spec` on a model of `model_format`."""
    is_torch = model_format is not ModelFormat.onnx
    first = spec.steps[0].config
    baseline_export = (
        (first if isinstance(first, ExportConfig) else ExportConfig()) if is_torch else None
    )
    planned: list[PlannedStep] = []
    unchanged = True  # the model is still the original: its export is the baseline
    for index, step in enumerate(spec.steps):
        needs = STEPS[step.name].input
        if step.name == "export" and is_torch and unchanged:
            planned.append(
                PlannedStep("export", step.config, {"reusedFor": "baseline"}, reuses_baseline=True)
            )
            is_torch = unchanged = False
            continue
        if needs is ModelInput.onnx and is_torch:
            planned.append(_export_before(step.name, reuse=unchanged))
            is_torch = False
        config, reasons = _settle(step, spec.steps[index + 1 :])
        planned.append(PlannedStep(step.name, config, reasons))
        if step.name == "export":
            is_torch = False
        elif needs is ModelInput.torch:
            is_torch = True
        unchanged = False
    if is_torch:
        planned.append(_export_before("evaluation", reuse=unchanged))
    return Plan(baseline_export=baseline_export, steps=tuple(planned))


def _export_before(name: str, *, reuse: bool) -> PlannedStep:
    if reuse:
        # The baseline is the original exported with default settings: no second export.
        reason = f"baseline export reused before {name}"
    else:
        reason = f"exported to ONNX with default settings before {name}"
    return PlannedStep("export", ExportConfig(), {"auto": reason}, reuses_baseline=reuse)


def _settle(step: Step, later: list[Step]) -> tuple[SpecModel, dict[str, str]]:
    config = step.config
    if not isinstance(config, OptimizeConfig):
        return config, {}
    return settle_optimize(
        config, [s.config for s in later if isinstance(s.config, QuantizeConfig)]
    )


def settle_optimize(
    config: OptimizeConfig, later_quantize: list[QuantizeConfig]
) -> tuple[OptimizeConfig, dict[str, str]]:
    """optimize's automatic choices, given the quantize steps that follow it.

    Level: when a quantize step follows, only basic is saved. Extended/all rewrite MatMul into
    FusedMatMul/Gemm (which dynamic INT8 does not quantize, leaving weights in float) and `all`
    writes CPU-specific layouts (NCHWc) that the quantizers and the fp16 converter cannot read.
    ONNX Runtime still applies the full level when it loads the quantized model.

    Fusion: `auto` skips transformer fusion before INT8. Static QDQ has no kernels for the
    fused Attention/SkipLayerNormalization/EmbedLayerNormalization ops, which would stay float
    (MiniLM: 2.9x smaller instead of 3.9x). Dynamic INT8 turns the fused Attention into
    per-channel QAttention, which is slower: MiniLM at 2 threads, batch 1, sequence 128 ran
    1.68x faster than FP32 fused against 1.92x unfused, at the same cosine (0.993). ONNX
    Runtime fuses layer norms and GELU itself when it loads the quantized model.
    """
    reasons: dict[str, str] = {}
    changes: dict[str, object] = {}
    int8 = any(q.mode is not QuantizeMode.fp16 for q in later_quantize)
    if int8 and config.transformer is TransformerFusion.auto:
        changes["transformer"] = TransformerFusion.off
        reasons["transformerFusion"] = "skipped: INT8 quantization follows"
    if later_quantize and config.level is not OptimizeLevel.basic:
        level = config.level.value
        changes["level"] = OptimizeLevel.basic
        reasons["optimizeLevelSaved"] = (
            f"basic (requested {level}; a quantize step follows, and ONNX Runtime applies "
            f"{level} when it loads the quantized model)"
        )
    return config.model_copy(update=changes), reasons


def describe(plan: Plan) -> list[str]:
    """The plan as lines a person reads: one per step, its settings and the reasons."""
    lines = []
    if plan.baseline_export is not None:
        lines.append(f"baseline: export to ONNX ({_settings(plan.baseline_export)})")
    else:
        lines.append("baseline: the ONNX model as given")
    for number, step in enumerate(plan.steps, 1):
        what = "reuse the baseline export" if step.reuses_baseline else _settings(step.config)
        lines.append(f"{number}. {step.name}: {what}")
        lines.extend(f"     {key}: {reason}" for key, reason in step.reasons.items())
    return lines


def _settings(config: SpecModel) -> str:
    values = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    return ", ".join(f"{key}={value}" for key, value in values.items()) or "defaults"
