"""Progress of long stages in the log a runner pod leaves to `kubectl logs`: per tensor, with
an estimate, and at a bounded rate. Real quantizations of a small MLP, stderr not a terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runner.manifests import PIPELINE_EVALUATION, manifest, write_manifest

from kondense.api.spec import ModelFormat, QuantizeConfig, QuantizeMode
from kondense.runners.console import ConsoleProgress
from kondense.runners.core import Model
from kondense.runners.steps.quantize import run as quantize

LAYERS = 6
# "kondense: <stage>: 3/6 (50%), 0:00 elapsed, ETA 0:00" while it runs, "..., done" at the end.
FIGURES = re.compile(r": (\d+)/(\d+) \(\d+%\), \d+:\d\d elapsed, (ETA \d+:\d\d|done)$")


def build_mlp(path: Path) -> Path:
    """x [batch, 16] -> LAYERS x (MatMul, Relu): LAYERS weight tensors to quantize."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for i in range(LAYERS):
        weight = rng.normal(0, 0.3, (16, 16)).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"], name=f"fc{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}"], name=f"relu{i}"))
        previous = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["batch", 16])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def stage_lines(log: str, stage: str) -> list[tuple[int, int, str]]:
    """(done, total, 'ETA m:ss' or 'done') of each figures line `stage` left in `log`."""
    found = []
    for line in log.splitlines():
        if line.startswith(f"kondense: {stage}: ") and (match := FIGURES.search(line)):
            found.append((int(match[1]), int(match[2]), match[3]))
    return found


def per_tensor(log: str, stage: str, total: int) -> None:
    """Every item of `stage` got a line with an estimate, and the last one says done."""
    lines = stage_lines(log, stage)
    assert [done for done, _, _ in lines] == list(range(1, total + 1)), log
    assert all(t == total for _, t, _ in lines), log
    assert all(left.startswith("ETA ") for _, _, left in lines[:-1]), log
    assert lines[-1][2] == "done", log
    assert f"kondense: {stage} (0/{total})" in log.splitlines()  # where the stage began


def test_static_int8_run_logs_each_calibration_window_and_weight_tensor_with_an_eta(
    tmp_path: Path,
) -> None:
    build_mlp(tmp_path / "mlp.onnx")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "calibration.npz", x=rng.normal(0, 1, (160, 16)).astype(np.float32))
    job = write_manifest(
        tmp_path / "job.yaml",
        manifest(
            "mlp.onnx",
            [{"quantize": {"mode": "static"}}],
            "out",
            data={"calibration": {"uri": "calibration.npz", "samples": 160}},
            evaluation=PIPELINE_EVALUATION,
        ),
    )
    # As in a runner pod: `kondense run` as its own process, stderr a pipe, not a terminal.
    done = subprocess.run(
        [sys.executable, "-m", "kondense.runners.cli", "run", str(job)],
        env={**os.environ, "KONDENSE_PROGRESS_SECONDS": "0"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    per_tensor(done.stderr, "quantize: static INT8, weight tensors", LAYERS)
    # 160 samples in windows of 4 chunks of 16.
    windows = stage_lines(done.stderr, "quantize: static INT8 calibration, samples")
    assert [(d, t) for d, t, _ in windows] == [(64, 160), (128, 160), (160, 160)], done.stderr
    assert [left.split()[0] for _, _, left in windows] == ["ETA", "ETA", "done"]
    assert "\x1b[" not in done.stderr  # plain lines, no terminal escapes


@pytest.mark.parametrize(
    ("mode", "stage"),
    [
        ("dynamic", "quantize: dynamic INT8 (s8), weight tensors"),
        ("fp16", "quantize: fp16, weight tensors"),
    ],
)
def test_quantization_reports_each_weight_tensor_with_an_eta(
    mode: str, stage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fixtures.models import step_context

    source = build_mlp(tmp_path / "mlp.onnx")
    ctx = step_context(tmp_path / "work", steps=[{"quantize": {"mode": mode}}])
    config = QuantizeConfig(mode=QuantizeMode(mode), keep_float=0)
    with ConsoleProgress(interval=0) as progress:
        quantize(
            Model(path=source, format=ModelFormat.onnx), config, replace(ctx, progress=progress)
        )
    per_tensor(capsys.readouterr().err, stage, LAYERS)


def test_a_quick_stage_logs_its_start_and_end_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fixtures.models import step_context

    source = build_mlp(tmp_path / "mlp.onnx")
    ctx = step_context(tmp_path / "work", steps=[{"quantize": {"mode": "dynamic"}}])
    config = QuantizeConfig(mode=QuantizeMode.dynamic, keep_float=0)
    with ConsoleProgress(interval=3600) as progress:
        quantize(
            Model(path=source, format=ModelFormat.onnx), config, replace(ctx, progress=progress)
        )
    log = capsys.readouterr().err
    stage = "quantize: dynamic INT8 (s8), weight tensors"
    start, end = [line for line in log.splitlines() if stage in line]  # nothing in between
    assert start == f"kondense: {stage} (0/{LAYERS})", log
    assert stage_lines(end, stage) == [(LAYERS, LAYERS, "done")], log


def build_cnn(path: Path) -> Path:
    """x [N, 3, H, W] -> a stem Conv (auto leaves it float) -> LAYERS x (Conv, Relu): LAYERS
    weight tensors for auto's static INT8, calibrated on the built-in images."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    stem = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "stem")
    nodes = [helper.make_node("Conv", ["x", "stem"], ["h"], name="stem", pads=[1, 1, 1, 1])]
    weights, previous = [stem], "h"
    for i in range(LAYERS):
        weight = rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"w{i}"))
        conv = helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], name=f"conv{i}")
        conv.attribute.append(helper.make_attribute("pads", [1, 1, 1, 1]))
        nodes += [conv, helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        previous = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["N", 8, "H", "W"])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def counted_stage(log: str, stage: str) -> int:
    """How many items `stage` counted, each with its own line and an estimate (per_tensor)."""
    lines = stage_lines(log, stage)
    assert lines, log
    total = lines[0][1]
    per_tensor(log, stage, total)
    return total


@pytest.mark.parametrize(
    ("build", "inputs", "kind", "method"),
    [
        (build_mlp, None, "MatMul", "dynamic INT8 (s8)"),
        (build_cnn, [{"name": "x", "shape": [1, 3, 32, 32]}], "Conv", "static INT8"),
    ],
)
def test_auto_reports_each_weight_tensor_and_calibration_batch_with_an_eta(
    build: Any,
    inputs: list[dict[str, Any]] | None,
    kind: str,
    method: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Auto quantizes each operator type alone, then the kept ones together, inside ONNX
    Runtime's quantizers: each weight and calibration batch is reported, named for the run."""
    from fixtures.models import step_context

    from kondense.runners.int8 import auto

    # What auto decides is not under test here: every INT8 model is "faster", and agrees.
    monkeypatch.setattr(
        auto, "_time", lambda paths, inputs, threads: [10.0] + [5.0] * (len(paths) - 1)
    )
    monkeypatch.setattr(auto, "MIN_AGREEMENT", 0.0)
    source = build(tmp_path / "model.onnx")
    spec: dict[str, Any] = {"inputs": inputs} if inputs else {}
    ctx = step_context(tmp_path / "work", steps=[{"quantize": {"mode": "auto"}}], **spec)
    config = QuantizeConfig(mode=QuantizeMode.auto)
    with ConsoleProgress(interval=0) as progress:
        quantize(
            Model(path=source, format=ModelFormat.onnx), config, replace(ctx, progress=progress)
        )
    log = capsys.readouterr().err
    alone = f"quantize auto, {kind} alone"
    assert counted_stage(log, f"{alone}: {method}, weight tensors") == LAYERS
    batches = counted_stage(log, f"{alone}: outputs on the calibration batches")
    assert batches >= 2
    if method == "static INT8":
        assert counted_stage(log, f"{alone}: static INT8 calibration, batches") == batches
        assert counted_stage(log, "quantize auto: static INT8 calibration, batches") == batches
        assert counted_stage(log, "quantize auto: static INT8, weight tensors") == LAYERS
    assert "quantize auto: outputs on the calibration batches" in log
