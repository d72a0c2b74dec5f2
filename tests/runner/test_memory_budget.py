"""The runner's memory budget: the cgroup limit and the machine's memory it reads, the need it
estimates, and the job it refuses up front naming spec.resources.memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runner.manifests import PIPELINE_EVALUATION, manifest, write_manifest
from typer.testing import CliRunner

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat
from kondense.runners import memory_budget
from kondense.runners.cli import app
from kondense.runners.memory_budget import (
    GIB,
    RUNTIME_BYTES,
    Budget,
    available_memory,
    cgroup_memory_limit,
    estimated_need,
)


def test_cgroup_v2_limit_is_read(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("8589934592\n")
    assert cgroup_memory_limit(tmp_path) == 8 * GIB


def test_cgroup_v2_max_is_no_limit(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path) is None


def test_cgroup_v1_limit_is_read(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("4294967296\n")
    assert cgroup_memory_limit(tmp_path) == 4 * GIB


def test_cgroup_v1_unlimited_is_no_limit(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_memory_limit(tmp_path) is None


def test_no_cgroup_files_is_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path) is None


def test_available_memory_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   2097152 kB\n")
    assert available_memory(meminfo) == 2 * GIB


def test_need_is_the_runtime_and_twice_an_onnx_model() -> None:
    assert estimated_need(10 * GIB, ModelFormat.onnx) == RUNTIME_BYTES + 20 * GIB
    assert estimated_need(10 * GIB, ModelFormat.huggingface) > 20 * GIB + RUNTIME_BYTES


def test_a_model_that_fits_the_limit_passes() -> None:
    Budget(limit=8 * GIB, available=20 * GIB).check(3 * GIB, ModelFormat.onnx)


def test_a_model_over_the_limit_names_the_field_and_the_size_to_raise_it_to() -> None:
    with pytest.raises(BadInput) as refused:
        Budget(limit=8 * GIB, available=20 * GIB).check(6 * GIB, ModelFormat.onnx)
    assert refused.value.field == "spec.resources.memory"
    message = str(refused.value)
    assert "memory limit is 8.0 GiB" in message
    assert "raise spec.resources.memory to at least 13Gi" in message  # 12 GiB + 0.75 GiB


def test_a_model_over_the_machines_memory_is_refused_without_a_limit() -> None:
    with pytest.raises(BadInput, match=r"this machine has 4\.0 GiB available"):
        Budget(limit=None, available=4 * GIB).check(3 * GIB, ModelFormat.onnx)


def test_the_smaller_of_limit_and_machine_is_the_one_named() -> None:
    with pytest.raises(BadInput, match="this machine has"):
        Budget(limit=16 * GIB, available=4 * GIB).check(3 * GIB, ModelFormat.onnx)


def test_unknown_budget_refuses_nothing() -> None:
    Budget(limit=None, available=None).check(1 << 40, ModelFormat.onnx)


def test_kondense_run_refuses_a_job_over_its_budget_before_any_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [weight],
    )
    model = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    job = write_manifest(
        tmp_path / "job.yaml",
        manifest(
            model,
            [{"quantize": {"mode": "dynamic"}}],
            tmp_path / "out",
            evaluation=PIPELINE_EVALUATION,
        ),
    )
    # A pod whose limit is under the runner's own start-up memory: nothing fits.
    monkeypatch.setattr(memory_budget, "cgroup_memory_limit", lambda: 256 << 20)
    result = CliRunner().invoke(app, ["run", str(job)])
    assert result.exit_code == 2, result.output
    assert "spec.resources.memory" in result.output
    assert "raise spec.resources.memory to at least 1Gi" in result.output
    assert not (tmp_path / "out").exists()


def test_a_torch_models_need_covers_the_peaks_measured_at_scale() -> None:
    # make bench-large --bert 1.2: a 1.21 GB BERT-like model peaked at 5.76 GB exported, at
    # 6.42 GB exported and quantized dynamic INT8.
    assert estimated_need(1_210_649_184, ModelFormat.huggingface) >= 6.42e9
