"""Writing CompressionJob manifests for runner tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# Settings for tests of the pipeline (report shape, job env, --output, storage), not of a
# result's quality: their verdict must not hinge on the CPU's integer kernels.
# Without data, a classifier is scored by top-1 agreement on random inputs, where near-ties
# flip: on the hand-built MLP, dynamic INT8 flipped 0 of 64 on AVX512-VNNI/AMX and 3 of 64
# (drop 0.047) on AVX2 without VNNI, whose u8s8 kernels saturate. A 0.25 limit is far above
# both and far below what a broken quantizer gives (an unrelated 4-class model agrees on
# about a quarter of inputs, a 10-class one on a tenth). Graphs this small run in
# microseconds, too little to time, so speed is not judged either.
PIPELINE_EVALUATION = {"maxMetricDrop": 0.25, "requireSpeedup": False}


def manifest(
    model_uri: str | Path,
    steps: list[dict[str, Any]],
    output: str | Path,
    *,
    task: str = "generic",
    data: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A CompressionJob with quick benchmark settings (few runs) unless told otherwise."""
    return {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "test"},
        "spec": {
            "model": {"uri": str(model_uri), "task": task},
            **({"data": data} if data else {}),
            "steps": steps,
            "evaluation": {"warmup": 2, "runs": 20, "threads": 1, **(evaluation or {})},
            "output": {"uri": str(output)},
            **spec,
        },
    }


def write_manifest(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_per_channel_and_per_tensor(model: Path, folder: Path) -> list[Path]:
    """Dynamic INT8 of `model` run twice with `kondense run`, per channel and per tensor: the
    output folders `folder`/per-channel and `folder`/per-tensor, for `kondense compare`."""
    from typer.testing import CliRunner

    from kondense.runners.cli import app

    outputs = []
    for name, per_channel in (("per-channel", True), ("per-tensor", False)):
        document = manifest(
            model,
            [{"quantize": {"mode": "dynamic", "perChannel": per_channel}}],
            folder / name,
            evaluation=PIPELINE_EVALUATION,
        )
        job = write_manifest(folder / f"{name}.yaml", document)
        assert CliRunner().invoke(app, ["run", str(job)]).exit_code == 0
        outputs.append(folder / name)
    return outputs
