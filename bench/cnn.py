"""CNN rows: FP32 against `quantize: {mode: dynamic}` and `{mode: auto}` on the CNNs the
project builds (tests/fixtures/cnns.py: a DB-style text detector and a MobileNet-style
classifier, exported like PyPI OCR models).

`measure_cnns(workdir)` returns one `CnnFigures` per model and recipe (p50 latency at batch 1
and 2 threads, interleaved; speedup over FP32; agreement with FP32 on generated images no
recipe was tuned on; bytes; what auto chose, or why it refused). bench/quality.py can call
it for its table; `python -m bench.cnn` prints it alone.

Agreement: the classifier's share of images with the same top class; the detector's share
of pixels on the same side of 0.5 in its probability map.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
RUNS = 100
# Spatial size the models are benchmarked and evaluated at (they take any size).
SIZES = {"text-detector": 256, "mobilenet": 160}
EVALUATION_IMAGES = 64
EVALUATION_SEED = 3  # the built-in sets use 1 (tune) and 2 (evaluate)


@dataclass
class CnnFigures:
    """One model under one recipe, measured beside its FP32 original."""

    model: str
    recipe: str
    p50_ms: float | None
    speedup: float | None
    agreement: float | None
    bytes: int
    note: str


def _fixtures() -> Any:
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from fixtures import cnns

    return cnns


def build_cnns(workdir: Path) -> dict[str, tuple[Path, Callable[..., float]]]:
    """The project's CNNs as ONNX files under `workdir`, each with its agreement function."""
    cnns = _fixtures()
    return {
        "text-detector": (
            cnns.text_detector_onnx(workdir / "text-detector.onnx"),
            cnns.map_agreement,
        ),
        "mobilenet": (cnns.mobilenet_onnx(workdir / "mobilenet.onnx"), cnns.argmax_agreement),
    }


def _quantize(source: Path, size: int, mode: str, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """`source` through the quantize step in `mode`, as a job with `size`x`size` inputs runs it."""
    from kondense.api.spec import CompressionJobSpec, ModelFormat
    from kondense.runners.core import Model, StepContext
    from kondense.runners.steps import load_step

    spec = CompressionJobSpec.model_validate(
        {
            "model": {
                "uri": str(source),
                "task": "generic",
                "inputs": [{"name": "x", "shape": [1, 3, size, size]}],
            },
            "steps": [{"quantize": {"mode": mode}}],
            "evaluation": {"batchSize": 1, "threads": THREADS},
            "output": {"uri": str(workdir / "out")},
        }
    )
    notes: dict[str, Any] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = StepContext.for_spec(spec, workdir, report=notes.__setitem__)
    config = spec.steps[0].config
    result = load_step("quantize")(Model(path=source, format=ModelFormat.onnx), config, ctx)
    return Path(result.path), notes


def measure_cnns(workdir: Path, *, runs: int = RUNS) -> list[CnnFigures]:
    """FP32, dynamic INT8 and auto for each CNN: latency, speedup, agreement, bytes, notes."""
    from kondense.api.errors import KondenseError
    from kondense.runners.io.builtin import natural_images
    from kondense.runners.measure.benchmark import benchmark_models
    from kondense.runners.measure.inference import CPU, Device
    from kondense.runners.model import onnx_files

    figures: list[CnnFigures] = []
    for name, (source, agreement) in build_cnns(workdir).items():
        size = SIZES[name]
        images = natural_images(EVALUATION_IMAGES, size, size, seed=EVALUATION_SEED)
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        rows: list[tuple[str, Path | None, str]] = [("fp32", source, "")]
        for mode in ("dynamic", "auto"):
            try:
                path, notes = _quantize(source, size, mode, workdir / f"{name}-{mode}")
                rows.append((mode, path, _summary(notes)))
            except KondenseError as error:
                rows.append((mode, None, f"refused: {error}"))
        paths = [path for _, path, _ in rows if path is not None]
        timings = benchmark_models(
            paths,
            {"x": images[:1]},
            threads=THREADS,
            device=Device("cpu", CPU),
            warmup=5,
            runs=runs,
        )
        by_path = dict(zip(paths, timings, strict=True))
        reference = _outputs(source, images)
        fp32_ms = by_path[source].latency_ms_p50
        model = f"{name} 3x{size}x{size}"
        for recipe, path, note in rows:
            if path is None:
                figures.append(CnnFigures(model, recipe, None, None, None, 0, note))
                continue
            p50 = by_path[path].latency_ms_p50
            figures.append(
                CnnFigures(
                    model=model,
                    recipe=recipe,
                    p50_ms=round(p50, 3),
                    speedup=round(fp32_ms / p50, 3),
                    agreement=round(agreement(reference, _outputs(path, images)), 4),
                    bytes=onnx_files.onnx_size_bytes(path),
                    note=note,
                )
            )
    return figures


def _outputs(path: Path, images: np.ndarray) -> np.ndarray:
    from kondense.runners.measure.inference import CPU, Device, open_session

    session = open_session(path, threads=THREADS, device=Device("cpu", CPU))
    return np.concatenate(
        [session.run(None, {"x": images[i : i + 8]})[0] for i in range(0, len(images), 8)]
    )


def _summary(notes: dict[str, Any]) -> str:
    decided = "; ".join(
        f"{d['op']} {d['method']} {d['speedup']:.2f}x" for d in notes.get("autoDecisions", [])
    )
    return f"{notes.get('quantization', '')}" + (f" [{decided}]" if decided else "")


def print_figures(figures: list[CnnFigures]) -> None:
    print(f"\nCNNs | batch 1, {THREADS} threads, agreement over {EVALUATION_IMAGES} images")
    for f in figures:
        latency = f"{f.p50_ms:8.2f} ms" if f.p50_ms is not None else "        -  "
        speed = f"{f.speedup:5.2f}x" if f.speedup is not None else "    - "
        agree = f"{f.agreement:.4f}" if f.agreement is not None else "   -  "
        print(f"{f.model:26} {f.recipe:8} {latency} {speed} agree {agree}  {f.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kondense-bench-cnn-") as scratch:
        figures = measure_cnns(Path(scratch), runs=args.runs)
    print_figures(figures)
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in figures], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
