"""Gates: a result that loses too much quality or runs slower than its baseline is rejected."""

from __future__ import annotations

from pathlib import Path

from runner.manifests import manifest

from kondense.api.outcome import EvaluationData, Figures, Results
from kondense.api.spec import CompressionJob, CompressionJobSpec
from kondense.runners.measure.gates import (
    SYNTHETIC_GROSS_DROP,
    evaluation_note,
    fp16_cpu_verdict,
    gate_problems,
)
from kondense.runners.plan import resolve_uris


def spec(steps: list[dict[str, object]] | None = None, **evaluation: object) -> CompressionJobSpec:
    document = manifest("m.onnx", steps or [{"quantize": {"mode": "dynamic"}}], "out")
    document["spec"]["evaluation"].update(evaluation)
    return CompressionJob.model_validate(document).spec


def results(
    metric_drop: float,
    speedup: float,
    device: str = "cpu (CPUExecutionProvider)",
    data: EvaluationData = EvaluationData.user,
) -> Results:
    base = Figures(bytes=100, latency_ms_p50=10.0, latency_ms_p95=12.0, throughput=100, metric=0.9)
    comp = Figures(
        bytes=25,
        latency_ms_p50=10.0 / speedup,
        latency_ms_p95=12.0 / speedup,
        throughput=100 * speedup,
        metric=0.9 - metric_drop,
    )
    return Results(
        baseline=base,
        compressed=comp,
        metric_name="accuracy",
        metric_drop=metric_drop,
        size_ratio=4.0,
        speedup=speedup,
        device=device,
        threads=2,
        batch_size=1,
        evaluation_data=data,
        evaluation_samples=64,
    )


def test_result_within_limits_passes() -> None:
    assert gate_problems(results(0.005, 1.9), spec(maxMetricDrop=0.01)) == []


def test_metric_drop_over_max_metric_drop_is_rejected_with_the_figures() -> None:
    (problem,) = gate_problems(results(0.02, 1.9), spec(maxMetricDrop=0.01))
    assert "accuracy dropped by 0.020000" in problem
    assert "maxMetricDrop 0.01" in problem and "0.88" in problem


def test_slower_result_is_rejected_with_both_latencies() -> None:
    (problem,) = gate_problems(results(0.0, 0.8), spec())
    assert "slower than its baseline" in problem
    assert "12.5 ms vs 10.0 ms" in problem and "requireSpeedup" in problem


def test_slower_result_passes_when_speedup_is_not_required() -> None:
    assert gate_problems(results(0.0, 0.8), spec(requireSpeedup=False)) == []


def test_fp16_on_a_cpu_is_not_judged_on_speed_and_says_so() -> None:
    fp16 = spec([{"quantize": {"mode": "fp16"}}])
    slow_on_cpu = results(0.0, 0.3)
    assert gate_problems(slow_on_cpu, fp16) == []
    verdict = fp16_cpu_verdict(slow_on_cpu, fp16)
    assert verdict is not None and "speed not judged" in verdict
    on_gpu = results(0.0, 0.3, device="cuda (CUDAExecutionProvider)")
    assert fp16_cpu_verdict(on_gpu, fp16) is None
    assert "slower" in gate_problems(on_gpu, fp16)[0]


def test_relative_uris_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    document = manifest("models/m.onnx", [{"quantize": {"mode": "dynamic"}}], "../out")
    document["spec"]["data"] = {
        "evaluation": {"uri": "data/eval.npz"},
        "calibration": {"uri": "s3://bucket/calib.npz"},
    }
    resolved = resolve_uris(CompressionJob.model_validate(document).spec, tmp_path / "jobs")
    assert resolved.model.uri == str(tmp_path / "jobs/models/m.onnx")
    assert resolved.data.evaluation is not None
    assert resolved.data.evaluation.uri == str(tmp_path / "jobs/data/eval.npz")
    assert resolved.data.calibration is not None
    assert resolved.data.calibration.uri == "s3://bucket/calib.npz"
    assert resolved.output.uri == str(tmp_path / "out")


def test_on_synthetic_inputs_only_gross_breakage_is_rejected() -> None:
    synthetic = EvaluationData.synthetic
    # Random inputs exaggerate quantization error: 0.05 is noise there, not a verdict.
    assert gate_problems(results(0.05, 1.9, data=synthetic), spec(maxMetricDrop=0.01)) == []
    (problem,) = gate_problems(
        results(SYNTHETIC_GROSS_DROP + 0.1, 1.9, data=synthetic), spec(maxMetricDrop=0.01)
    )
    assert "on 64 synthetic inputs" in problem and "gross breakage" in problem
    # A user who allows more than the gross-breakage bound keeps their own limit.
    assert gate_problems(results(0.25, 1.9, data=synthetic), spec(maxMetricDrop=0.3)) == []


def test_built_in_data_is_held_to_max_metric_drop_and_named() -> None:
    (problem,) = gate_problems(
        results(0.02, 1.9, data=EvaluationData.builtin_text), spec(maxMetricDrop=0.01)
    )
    assert "on 64 built-in sentences" in problem and "maxMetricDrop 0.01" in problem


def test_results_without_the_users_data_say_so_and_how_to_give_it() -> None:
    assert evaluation_note(results(0.0, 1.9), spec()) is None
    for data, words in (
        (EvaluationData.synthetic, "64 synthetic inputs, which show only gross breakage"),
        (EvaluationData.builtin_text, "64 built-in sentences"),
        (EvaluationData.builtin_images, "64 built-in generated images"),
    ):
        note = evaluation_note(results(0.0, 1.9, data=data), spec())
        assert note is not None and words in note
        assert "spec.data.evaluation (.jsonl text lines or .npz arrays" in note
