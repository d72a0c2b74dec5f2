"""`kondense search` on one machine: a real search on the digits CNN, in sequence and in two
processes; screening promotes only the top fraction; the best is the fastest accepted fully
evaluated candidate; a space where nothing is accepted exits non-zero with advice."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from kondense.api.errors import EXIT_REJECTED
from kondense.api.search import Measured, Round, SearchObjective, promoted
from kondense.runners.cli import app

QUICK = {"warmup": 2, "runs": 20, "threads": 1, "requireSpeedup": False}


def search_manifest(
    model: Path, output: Path, space: dict[str, Any], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionSearch",
        "metadata": {"name": "test-search"},
        "spec": {
            "model": {"uri": str(model)},
            "space": space,
            "output": {"uri": str(output)},
            **spec,
        },
    }


def kondense_search(tmp_path: Path, document: dict[str, Any], *args: str) -> tuple[int, str]:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    result = CliRunner().invoke(app, ["search", str(path), *args])
    return result.exit_code, result.output


def digits_search(model: Path, train: Path, evaluation: Path, output: Path) -> dict[str, Any]:
    """Six candidates: dynamic and static (minmax, percentile) INT8, per channel or tensor."""
    document = search_manifest(
        model,
        output,
        {
            "quantize": {
                "modes": ["dynamic", "static"],
                "calibrationMethods": ["minmax", "percentile"],
                "perChannel": [True, False],
            }
        },
        data={
            "calibration": {"uri": str(train), "samples": 100},
            "evaluation": {"uri": str(evaluation), "samples": 397},
        },
        evaluation={**QUICK, "batchSize": 32},
        objective={"minimize": "latency", "maxMetricDrop": 0.05},
        screening={"samples": 32, "keep": 0.5},
    )
    document["spec"]["model"] |= {
        "format": "torchscript",
        "task": "image-classification",
        "inputs": [{"name": "pixel_values", "shape": [1, 1, 8, 8], "dtype": "float32"}],
    }
    return document


@pytest.mark.parametrize("processes", [1, 2])
def test_digits_search_screens_promotes_the_top_half_and_keeps_the_fastest_accepted(
    processes: int,
    digits_cnn_torchscript: Path,
    digits_train_npz: Path,
    digits_npz: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    document = digits_search(digits_cnn_torchscript, digits_train_npz, digits_npz, tmp_path / "x")
    code, output = kondense_search(
        tmp_path, document, "--output", str(out), "--processes", str(processes)
    )
    assert code == 0, output
    result = json.loads((out / "search.json").read_text())
    names = [c["name"] for c in result["candidates"]]
    assert names == [
        "int8-dynamic",
        "int8-dynamic-pt",
        "int8-static-minmax",
        "int8-static-minmax-pt",
        "int8-static-percentile",
        "int8-static-percentile-pt",
    ]
    for name in names:
        assert name in output  # the table lists every candidate
    assert result["processes"] == processes and result["spaceSize"] == 6
    assert result["cutByBudget"] == 0

    # Every candidate was screened on 32 samples; only the top half went on to all 397.
    screened = [
        Measured(
            candidate=c["index"],
            round=Round.screen,
            finished=True,
            succeeded=c["screen"]["succeeded"],
            speedup=c["screen"].get("speedup"),
            size_ratio=c["screen"].get("sizeRatio"),
            metric_drop=c["screen"].get("metricDrop"),
        )
        for c in result["candidates"]
    ]
    assert all(c["screen"]["evaluationSamples"] == 32 for c in result["candidates"])
    full = [c for c in result["candidates"] if c["promoted"]]
    assert len(full) <= math.ceil(0.5 * len(names))
    objective = SearchObjective(minimize="latency", max_metric_drop=0.05)
    assert sorted(c["index"] for c in full) == sorted(promoted(screened, objective, 0.5))
    assert all(c["full"]["evaluationSamples"] == 397 for c in full)
    assert all("full" not in c for c in result["candidates"] if not c["promoted"])

    # The best is the highest-speedup accepted candidate of the full round.
    accepted = [c for c in full if c["full"]["accepted"] and c["full"]["metricDrop"] <= 0.05]
    fastest = max(accepted, key=lambda c: c["full"]["speedup"])
    best = result["best"]
    assert best["candidate"] == fastest["name"] and best["speedup"] == fastest["full"]["speedup"]
    assert best["artifact"] == str(
        out / f"{fastest['index']:02d}-{fastest['name']}/full/model.onnx"
    )
    assert Path(best["artifact"]).is_file()
    assert best["why"].startswith("fastest accepted: ")
    assert set(result["pareto"]) <= {c["name"] for c in full}
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if processes == 2:
        # Two workers: some children ran at the same time.
        spans = sorted(
            (r["startedAt"], r["startedAt"] + r["seconds"])
            for c in result["candidates"]
            for r in (c["screen"], c.get("full"))
            if r is not None
        )
        assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), spans


def test_a_space_where_nothing_is_accepted_exits_non_zero_with_advice(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    # No INT8 model reproduces float outputs exactly: with no drop allowed, every candidate is
    # rejected on the user's data.
    np.savez(tmp_path / "eval.npz", x=np.random.default_rng(0).normal(size=(64, 16)))
    document = search_manifest(
        tiny_onnx,
        tmp_path / "out",
        {"quantize": {"modes": ["dynamic"], "perChannel": [True, False]}},
        data={"evaluation": {"uri": str(tmp_path / "eval.npz")}},
        evaluation={**QUICK, "metric": "cosine"},
        objective={"maxMetricDrop": 0.0},
    )
    code, output = kondense_search(tmp_path, document)
    assert code == EXIT_REJECTED, output
    assert "no candidate was accepted" in output
    assert "raise maxMetricDrop" in output and "spec.space" in output
    result = json.loads((tmp_path / "out" / "search.json").read_text())
    assert result["best"] is None and "maxMetricDrop" in result["advice"]
    assert [c["name"] for c in result["candidates"]] == ["int8-dynamic", "int8-dynamic-pt"]
    assert not any(c["promoted"] for c in result["candidates"])


def test_validate_checks_a_search_manifest_and_counts_its_candidates(tmp_path: Path) -> None:
    good = tmp_path / "search.yaml"
    good.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kondense.dev/v1alpha1",
                "kind": "CompressionSearch",
                "metadata": {"name": "s"},
                "spec": {
                    "model": {"uri": "m.onnx"},
                    "space": {"quantize": {"perChannel": [True, False]}},
                    "output": {"uri": "out"},
                },
            }
        )
    )
    result = CliRunner().invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "valid CompressionSearch 's' (2 candidates)" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("perChannel", "perChanel"))
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "spec.space.quantize.perChanel" in result.output
