"""Gates: whether a measured result is accepted, and the verdict a user reads when it is not."""

from __future__ import annotations

from kondense.api.outcome import Results
from kondense.api.spec import CompressionJobSpec
from kondense.api.steps import DeviceClass, recipe_device


def _speed_unjudged(results: Results, spec: CompressionJobSpec) -> bool:
    """A recipe that needs a GPU, measured without one: its speed says nothing."""
    return recipe_device(spec.steps) is DeviceClass.gpu and results.device.startswith("cpu")


def gate_problems(results: Results, spec: CompressionJobSpec) -> list[str]:
    """Why the result fails its gates; empty when it passes."""
    problems = []
    settings = spec.evaluation
    if results.metric_drop > settings.max_metric_drop + 1e-9:
        problems.append(
            f"{results.metric_name} dropped by {results.metric_drop:.6f} "
            f"({results.baseline.metric} -> {results.compressed.metric}), more than "
            f"spec.evaluation.maxMetricDrop {settings.max_metric_drop}"
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


def fp16_cpu_verdict(results: Results, spec: CompressionJobSpec) -> str | None:
    """The note an fp16 result measured on a CPU carries: its speed was not judged."""
    if _speed_unjudged(results, spec):
        return (
            "fp16 measured without a GPU: speed not judged (a CPU has no fast fp16 kernels); "
            "run on a GPU node pool to measure it"
        )
    return None
