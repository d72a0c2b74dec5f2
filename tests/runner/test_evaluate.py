"""Metrics: cosine, top-1 accuracy, agreement, and evaluating two real ONNX models side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.models import build_tiny_onnx

from kondense.api.errors import BadInput
from kondense.api.spec import Metric, Task
from kondense.runners.io.data import Batch, onnx_input_signatures, synthetic_batches
from kondense.runners.measure.evaluate import (
    agreement,
    evaluate_pair,
    mean_cosine,
    mean_pool,
    metric_name,
    top1_accuracy,
)
from kondense.runners.measure.inference import Device, pick_device

CPU = Device("cpu", "CPUExecutionProvider")


def test_cosine_of_identical_rows_is_one_and_of_opposite_rows_minus_one() -> None:
    a = np.array([[1.0, 2.0], [0.5, -1.0]])
    assert mean_cosine(a, a) == pytest.approx(1.0)
    assert mean_cosine(a, -a) == pytest.approx(-1.0)
    assert mean_cosine(a, np.array([[2.0, -1.0], [2.0, 1.0]])) == pytest.approx(0.0)


def test_top1_accuracy_counts_rows_whose_best_class_is_the_label() -> None:
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert top1_accuracy(logits, np.array([1, 0, 0, 1])) == 0.5


def test_agreement_compares_argmax_of_two_models() -> None:
    a = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    b = np.array([[0.2, 0.8], [0.1, 0.9], [0.4, 0.6]])
    assert agreement(a, b) == pytest.approx(2 / 3)


def test_mean_pool_ignores_padding_tokens() -> None:
    hidden = np.array([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    pooled = mean_pool(hidden, np.array([[1, 1, 0]]))
    np.testing.assert_allclose(pooled, [[2.0, 2.0]])


def test_auto_metric_follows_the_task_and_the_labels() -> None:
    assert metric_name(Metric.auto, Task.text_embedding, has_labels=False) == "cosine"
    assert metric_name(Metric.auto, Task.image_classification, has_labels=True) == "accuracy"
    assert metric_name(Metric.auto, Task.text_classification, has_labels=False) == "agreement"
    assert metric_name(Metric.auto, Task.generic, has_labels=False) == "agreement"
    assert metric_name(Metric.auto, Task.generic, has_labels=False, classes=1) == "cosine"


def test_accuracy_without_labels_is_refused_naming_the_field() -> None:
    with pytest.raises(BadInput, match=r"spec\.evaluation\.metric"):
        metric_name(Metric.accuracy, Task.generic, has_labels=False)


def test_a_model_agrees_fully_with_itself_and_less_with_a_different_one(tmp_path: Path) -> None:
    same = build_tiny_onnx(tmp_path / "a.onnx", seed=0)
    other = build_tiny_onnx(tmp_path / "b.onnx", seed=1)
    batches = list(
        synthetic_batches(onnx_input_signatures(same), batches=4, batch_size=16, sequence_length=1)
    )
    kwargs = {"task": Task.generic, "metric": Metric.auto, "threads": 1, "device": CPU}
    itself = evaluate_pair(same, same, batches, **kwargs)  # type: ignore[arg-type]
    assert (itself.metric_name, itself.baseline, itself.compressed) == ("agreement", 1.0, 1.0)
    differs = evaluate_pair(same, other, batches, **kwargs)  # type: ignore[arg-type]
    assert differs.compressed < 0.9 and differs.samples == 64
    cosine = evaluate_pair(same, other, batches, **{**kwargs, "metric": Metric.cosine})  # type: ignore[arg-type]
    assert cosine.metric_name == "cosine" and cosine.compressed < 0.99


def test_labelled_data_scores_both_models_by_accuracy(tmp_path: Path) -> None:
    model = build_tiny_onnx(tmp_path / "a.onnx")
    (batch,) = synthetic_batches(
        onnx_input_signatures(model), batches=1, batch_size=32, sequence_length=1
    )
    import onnxruntime as ort

    predicted = ort.InferenceSession(str(model)).run(None, batch.inputs)[0].argmax(axis=1)
    labels = predicted.copy()
    labels[:8] = (labels[:8] + 1) % 4  # a quarter wrong
    labelled = Batch(inputs=batch.inputs, labels=labels)
    result = evaluate_pair(
        model, model, [labelled], task=Task.generic, metric=Metric.auto, threads=1, device=CPU
    )
    assert result.metric_name == "accuracy"
    assert result.baseline == result.compressed == pytest.approx(0.75)


def test_cpu_is_picked_when_no_cuda_provider_is_available() -> None:
    import onnxruntime as ort

    device = pick_device()
    expected = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    assert device.name == expected


def build_regressor(path: Path, scale: float) -> Path:
    """y = scale * sum(x): one output value per sample."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((16, 1), scale, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "regressor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_single_output_models_are_compared_over_all_samples_not_by_sign(tmp_path: Path) -> None:
    base = build_regressor(tmp_path / "a.onnx", 1.0)
    inputs = np.random.default_rng(0).random((8, 16), dtype=np.float32)
    batches = [Batch(inputs={"x": inputs}, labels=None)]
    same = evaluate_pair(
        base, base, batches, task=Task.generic, metric=Metric.auto, threads=1, device=CPU
    )
    assert (same.metric_name, same.compressed) == ("cosine", pytest.approx(1.0))
    # A model whose outputs are all positive but differently ordered must not score 1.
    other = tmp_path / "b.onnx"
    build_regressor(other, 1.0)
    import onnx
    from onnx import helper

    model = onnx.load(str(other))
    model.graph.node.append(helper.make_node("Reciprocal", ["y"], ["z"]))
    model.graph.output[0].name = "z"
    onnx.save(model, str(other))
    scored = evaluate_pair(
        base,
        other,
        batches,
        task=Task.generic,
        metric=Metric.auto,
        threads=1,
        device=CPU,
    )
    assert scored.metric_name == "cosine" and scored.compressed < 0.999


@pytest.mark.parametrize(
    ("interleave_max_bytes", "sessions"),
    [
        # Large together: each opened once, the baseline's session gone before the result's
        # opens (issue #17).
        (0, [("a.onnx", 1), ("b.onnx", 1)]),
        # Small together: evaluated one at a time, then timed interleaved, both open (a noisy
        # neighbour slows both alike).
        (256 << 20, [("a.onnx", 1), ("b.onnx", 1), ("a.onnx", 1), ("b.onnx", 2)]),
    ],
    ids=["large-one-after-the-other", "small-interleaved"],
)
def test_the_baseline_and_the_result_share_memory_only_when_small(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    interleave_max_bytes: int,
    sessions: list[tuple[str, int]],
) -> None:
    import weakref

    from fixtures.models import minimal_spec

    from kondense.api.spec import ModelFormat
    from kondense.runners.core import Model, no_progress
    from kondense.runners.measure import benchmark, inference, side_by_side
    from kondense.runners.measure.side_by_side import measure_pair

    base = build_tiny_onnx(tmp_path / "a.onnx", seed=0)
    result = build_tiny_onnx(tmp_path / "b.onnx", seed=1)
    opened: list[tuple[str, int]] = []
    alive: set[int] = set()
    real = inference.open_session

    def counted(path: Path, **kwargs: object) -> object:
        session = real(path, **kwargs)  # type: ignore[arg-type]
        alive.add(id(session))
        weakref.finalize(session, alive.discard, id(session))
        opened.append((path.name, len(alive)))
        return session

    monkeypatch.setattr(inference, "open_session", counted)
    monkeypatch.setattr(benchmark, "open_session", counted)
    monkeypatch.setattr(side_by_side, "INTERLEAVE_MAX_BYTES", interleave_max_bytes)
    spec = minimal_spec(tmp_path, model_uri=str(base), steps=[{"quantize": {"mode": "dynamic"}}])
    results = measure_pair(
        Model(path=base, format=ModelFormat.onnx),
        Model(path=result, format=ModelFormat.onnx),
        spec,
        onnx_input_signatures(base),
        None,
        no_progress,
    )
    assert opened == sessions
    assert results.metric_name == "agreement" and results.baseline.metric == 1.0
    assert results.compressed.metric < 0.9  # scored against the baseline's outputs
    assert results.baseline.latency_ms_p50 > 0 and results.compressed.latency_ms_p50 > 0
