"""Gates: whether a measured result is accepted, and the verdict a user reads when it is not."""

from __future__ import annotations

from kondense.api.outcome import EvaluationData, Results
from kondense.api.spec import CompressionJobSpec
from kondense.api.steps import DeviceClass, recipe_device


def _speed_unjudged(results: Results, spec: CompressionJobSpec) -> bool:
    """A recipe that needs a GPU, measured without one: its speed says nothing."""
    return recipe_device(spec.steps) is DeviceClass.gpu and results.device.startswith("cpu")


# Synthetic inputs (random values of the model's shapes) sit far from real data and exaggerate
# quantization error: MiniLM's INT8 lost 0.022 cosine on random token ids and about 0.01 on
# sentences. A figure from them can only tell a broken result from a working one, so on
# synthetic inputs the gate rejects only a drop above this (or above maxMetricDrop when that
# is larger): a wrong scale or a permuted weight loses far more (0.2-0.9 in tests/steps).
SYNTHETIC_GROSS_DROP = 0.2
GIVE_DATA = (
    "give representative data in spec.data.evaluation (.jsonl text lines or .npz arrays named "
    "like the model inputs) for a figure you can hold the result to"
)


def allowed_drop(results: Results, spec: CompressionJobSpec) -> float:
    """The largest metric drop the gate accepts for what the metric was measured on."""
    if results.evaluation_data is EvaluationData.synthetic:
        return max(spec.evaluation.max_metric_drop, SYNTHETIC_GROSS_DROP)
    return spec.evaluation.max_metric_drop


def gate_problems(results: Results, spec: CompressionJobSpec) -> list[str]:
    """Why the result fails its gates; empty when it passes."""
    problems = []
    settings = spec.evaluation
    allowed = allowed_drop(results, spec)
    if results.metric_drop > allowed + 1e-9:
        bound = (
            f"spec.evaluation.maxMetricDrop {settings.max_metric_drop}"
            if allowed == settings.max_metric_drop
            else f"{allowed}, the bound for gross breakage on synthetic inputs; the result "
            f"looks broken, not merely imprecise"
        )
        problems.append(
            f"{results.metric_name} dropped by {results.metric_drop:.6f} "
            f"({results.baseline.metric} -> {results.compressed.metric}) on "
            f"{results.measured_on()}, more than {bound}"
        )
    if settings.require_speedup and results.speedup < 1.0:
        if _speed_unjudged(results, spec):
            return problems
        problems.append(
            f"the result is slower than its baseline: p50 {results.compressed.latency_ms_p50} ms "
            f"vs {results.baseline.latency_ms_p50} ms (speedup {results.speedup}x) on "
            f"{results.device} with {results.threads} threads; set "
            "spec.evaluation.requireSpeedup: false to accept it anyway"
        )
    return problems


def evaluation_note(results: Results, spec: CompressionJobSpec) -> str | None:
    """What a result measured without the user's data carries, so nobody mistakes the figure
    for one on their own data."""
    kind = results.evaluation_data
    if kind is EvaluationData.synthetic:
        return (
            f"quality measured on {results.measured_on()}, which show only gross breakage "
            f"(a {results.metric_name} drop up to {allowed_drop(results, spec)} passes); "
            + GIVE_DATA
        )
    if kind in (EvaluationData.builtin_text, EvaluationData.builtin_images):
        return (
            f"quality measured on {results.measured_on()} (no spec.data.evaluation); " + GIVE_DATA
        )
    return None


def fp16_cpu_verdict(results: Results, spec: CompressionJobSpec) -> str | None:
    """The note an fp16 result measured on a CPU carries: its speed was not judged."""
    if _speed_unjudged(results, spec):
        return (
            "fp16 measured without a GPU: speed not judged (a CPU has no fast fp16 kernels); "
            "run on a GPU node pool to measure it"
        )
    return None
