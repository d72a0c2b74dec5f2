"""`make bench-large`: the runner's memory on large ONNX models, stage by stage.

Builds models of about 2.5 GB and 6 GB (MatMul + Relu layers, random float32 weights in
external data) under /tmp, runs `kondense run` on each with optimize and INT8 (dynamic,
static), and prints for each run the peak resident memory of every stage, the run's peak and
its ratio to the model's bytes, the wall time and the result's size. Each run is a child
process sampled from outside (tests/fixtures/large_models.py), so this process's memory is
not counted. The models are deleted afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.large_models import (  # noqa: E402
    MemoryRun,
    run_with_memory,
    write_calibration,
    write_matmul_chain,
)

GB = 1e9
HIDDEN = 8192
CALIBRATION_SAMPLES = 100


def manifest(model: Path, mode: str, calibration: Path | None, threads: int) -> dict[str, object]:
    """optimize (basic) then quantize `mode`; speed and metric are not what is measured here."""
    data = {"calibration": {"uri": str(calibration), "samples": CALIBRATION_SAMPLES}}
    return {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": f"large-{mode}"},
        "spec": {
            "model": {"uri": str(model), "format": "onnx", "task": "generic"},
            **({"data": data} if calibration is not None else {}),
            "steps": [{"optimize": {"level": "basic"}}, {"quantize": {"mode": mode}}],
            "evaluation": {
                "warmup": 1,
                "runs": 3,
                "threads": threads,
                "maxMetricDrop": 1.0,
                "requireSpeedup": False,
            },
            "output": {"uri": "unused"},
        },
    }


def model_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.name.startswith("model.onnx"))


def measure(
    size_gb: float, modes: list[str], workdir: Path, *, hidden: int, threads: int
) -> list[tuple[str, int, MemoryRun, int]]:
    """Build a model of `size_gb`, run each mode on it: (mode, model bytes, run, result bytes)."""
    folder = workdir / f"model-{size_gb:g}gb"
    print(f"building a {size_gb:g} GB model in {folder} ...", flush=True)
    path = write_matmul_chain(folder / "model", weight_bytes=int(size_gb * GB), hidden=hidden)
    size = model_bytes(path.parent)
    calibration = write_calibration(
        folder / "calibration.npz", hidden=hidden, samples=CALIBRATION_SAMPLES
    )
    rows = []
    for mode in modes:
        job = folder / f"{mode}.yaml"
        uses_data = mode in ("static", "auto")
        job.write_text(
            yaml.safe_dump(manifest(path, mode, calibration if uses_data else None, threads))
        )
        out = folder / f"out-{mode}"
        run = run_with_memory(job, out)
        result = model_bytes(out) if out.is_dir() else 0
        rows.append((mode, size, run, result))
        print_run(mode, size, run, result)
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def print_run(mode: str, size: int, run: MemoryRun, result: int) -> None:
    status = "ok" if run.returncode == 0 else f"exit {run.returncode}"
    print(
        f"\nquantize {mode} on {size / GB:.2f} GB: peak RSS {run.peak_rss / GB:.2f} GB = "
        f"{run.peak_rss / size:.2f}x the model ({run.peak_above_startup() / size:.2f}x above the "
        f"{run.startup_rss / GB:.2f} GB at start-up), {run.seconds:.0f} s, result "
        f"{result / GB:.3f} GB, {status}"
    )
    print(f"  {'stage':<48} {'peak RSS':>10} {'x model':>8}")
    for stage, peak in run.stages.items():
        print(f"  {stage:<48} {peak / GB:>8.2f}GB {peak / size:>8.2f}")
    if run.returncode != 0:
        print("\n".join("  | " + line for line in run.log[-15:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="2.5,6", help="model sizes in GB, comma-separated")
    parser.add_argument("--modes", default="dynamic,static", help="quantize modes to run")
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="width of each layer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory(prefix="kondense-bench-large-", dir=args.workdir) as work:
        for size in (float(s) for s in args.sizes.split(",")):
            rows = measure(
                size, args.modes.split(","), Path(work), hidden=args.hidden, threads=args.threads
            )
            failed |= any(run.returncode != 0 for _, _, run, _ in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
