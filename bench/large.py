"""`make bench-large`: the runner's memory on large ONNX models, stage by stage.

Builds models of about 2.5 GB and 6 GB (MatMul + Relu layers, random float32 weights in
external data) under /tmp, runs `kondense run` on each with optimize and INT8 (dynamic,
static), and prints for each run the peak resident memory of every stage, the run's peak and
its ratio to the model's bytes, the wall time and the result's size. Each run is a child
process sampled from outside (tests/fixtures/large_models.py), so this process's memory is
not counted. The models are deleted afterwards.

Each recipe also runs on a small model of the same kind (one 256x256 layer; a BERT of width
64 with one layer), and every stage is printed twice: its peak's ratio to the model's bytes,
and the ratio of what the model adds (the stage's peak less the small model's at the same
stage, over the difference in bytes), as tests/runner/test_large_model_memory.py asserts it.
What every run holds whatever the model (Python, torch, ONNX Runtime) is in the first, not in
the second.

`--bert 1.2` does the same for the export step: a BERT-like Hugging Face model of about 1.2 GB
(random weights in safetensors, MiniLM's tokenizer) exported alone, then exported and
quantized dynamic INT8.
"""

from __future__ import annotations

import argparse
import re
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
    write_bert,
    write_calibration,
    write_matmul_chain,
)
from fixtures.models import minilm_path  # noqa: E402

GB = 1e9
HIDDEN = 8192
CALIBRATION_SAMPLES = 100
BERT_HIDDEN = 1536
SMALL_HIDDEN = 256  # the small chain: one layer of 256 KB
SMALL_BERT_HIDDEN = 64  # the small BERT: one layer, 8 MB with its embeddings
# The torch model's recipes: export alone, and export then dynamic INT8.
BERT_RECIPES: dict[str, list[dict[str, object]]] = {
    "export": [{"export": {"opset": 17}}],
    "export+dynamic": [{"export": {"opset": 17}}, {"quantize": {"mode": "dynamic"}}],
}


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


def bert_manifest(model: Path, recipe: str, threads: int) -> dict[str, object]:
    """`recipe` on a Hugging Face text-embedding model, measured on a few built-in sentences."""
    return {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": f"large-bert-{recipe.replace('+', '-')}"},
        "spec": {
            "model": {"uri": str(model), "format": "huggingface", "task": "text-embedding"},
            "steps": BERT_RECIPES[recipe],
            "evaluation": {
                "samples": 16,
                "sequenceLength": 32,
                "warmup": 1,
                "runs": 3,
                "threads": threads,
                "maxMetricDrop": 1.0,
                "requireSpeedup": False,
            },
            "output": {"uri": "unused"},
        },
    }


def measure_bert(
    size_gb: float, recipes: list[str], workdir: Path, *, hidden: int, threads: int
) -> list[tuple[str, int, MemoryRun, int]]:
    """Build a BERT-like model of `size_gb`, run each of `recipes` (BERT_RECIPES) on it and on
    a small one."""
    folder = workdir / f"bert-{size_gb:g}gb"
    print(f"building a {size_gb:g} GB BERT-like model in {folder} ...", flush=True)
    models = [
        write_bert(folder / name, weight_bytes=weight, hidden=width, tokenizer=minilm_path())
        for name, weight, width in (
            ("small", 0, SMALL_BERT_HIDDEN),
            ("model", size_gb * GB, hidden),
        )
    ]
    rows = []
    for recipe in recipes:
        small, (size, run, result) = (
            run_recipe(folder / f"{recipe}-{model.name}", bert_manifest(model, recipe, threads))
            for model in models
        )
        rows.append((recipe, size, run, result))
        print_run(recipe, size, run, result, small)
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def run_recipe(folder: Path, document: dict[str, object]) -> tuple[int, MemoryRun, int]:
    """(model bytes, the measured run, result bytes) of `document` written to `folder`."""
    spec = document["spec"]
    assert isinstance(spec, dict)
    model = Path(spec["model"]["uri"])
    size = (
        (model / "model.safetensors").stat().st_size
        if model.is_dir()
        else model_bytes(model.parent)
    )
    folder.mkdir(parents=True, exist_ok=True)
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump(document))
    out = folder / "out"
    run = run_with_memory(job, out)
    result = model_bytes(out) if out.is_dir() else 0
    shutil.rmtree(folder, ignore_errors=True)
    return size, run, result


def model_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.name.startswith("model.onnx"))


def measure(
    size_gb: float, modes: list[str], workdir: Path, *, hidden: int, threads: int
) -> list[tuple[str, int, MemoryRun, int]]:
    """Build a model of `size_gb`, run each mode on it and on a small one: (mode, model bytes,
    run, result bytes)."""
    folder = workdir / f"model-{size_gb:g}gb"
    print(f"building a {size_gb:g} GB model in {folder} ...", flush=True)
    models = [
        (
            write_matmul_chain(folder / name / "model", weight_bytes=weight, hidden=width),
            write_calibration(
                folder / name / "calibration.npz", hidden=width, samples=CALIBRATION_SAMPLES
            ),
        )
        for name, weight, width in (
            ("small", SMALL_HIDDEN * SMALL_HIDDEN * 4, SMALL_HIDDEN),
            ("large", int(size_gb * GB), hidden),
        )
    ]
    rows = []
    for mode in modes:
        uses_data = mode in ("static", "auto")
        small, (size, run, result) = (
            run_recipe(
                path.parent.parent / f"run-{mode}",
                manifest(path, mode, calibration if uses_data else None, threads),
            )
            for path, calibration in models
        )
        rows.append((mode, size, run, result))
        print_run(f"quantize {mode}", size, run, result, small)
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def same_stage(stage: str) -> str:
    """A stage's name with its counts left out, so the small model's run names it alike:
    'quantize: INT8 error of 57 ops' -> 'quantize: INT8 error of N ops'."""
    return re.sub(r"\d+", "N", stage)


def print_run(
    title: str, size: int, run: MemoryRun, result: int, small: tuple[int, MemoryRun, int]
) -> None:
    """`title` (the recipe) on a model of `size` bytes: the run's peak, then each stage's,
    each also as what the model adds above the same stage of `small` (the recipe on a small
    model: its bytes, run and result)."""
    small_size, small_run, _ = small
    status = "ok" if run.returncode == 0 else f"exit {run.returncode}"
    if small_run.returncode != 0:
        status += f"; the small model's run exited {small_run.returncode}"
    added = (run.peak_rss - small_run.peak_rss) / (size - small_size)
    print(
        f"\n{title} on {size / GB:.2f} GB: peak RSS {run.peak_rss / GB:.2f} GB = "
        f"{run.peak_rss / size:.2f}x the model; what the model adds: {added:.2f}x (above the "
        f"{small_run.peak_rss / GB:.2f} GB peak on a {small_size / 1e6:.1f} MB model), "
        f"{run.seconds:.0f} s, result {result / GB:.3f} GB, {status}"
    )
    baseline = {same_stage(stage): peak for stage, peak in small_run.stages.items()}
    print(f"  {'stage':<56} {'peak RSS':>10} {'x model':>8} {'added x':>8}")
    for stage, peak in run.stages.items():
        other = baseline.get(same_stage(stage))
        extra = "" if other is None else f"{(peak - other) / (size - small_size):>8.2f}"
        print(f"  {stage:<56} {peak / GB:>8.2f}GB {peak / size:>8.2f} {extra}")
    if run.returncode != 0:
        print("\n".join("  | " + line for line in run.log[-15:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="2.5,6", help="model sizes in GB, comma-separated")
    parser.add_argument("--modes", default="dynamic,static", help="quantize modes to run")
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="width of each layer")
    parser.add_argument(
        "--bert",
        default="",
        help="sizes in GB of BERT-like PyTorch models to export (alone and + dynamic INT8)",
    )
    parser.add_argument("--bert-hidden", type=int, default=BERT_HIDDEN)
    parser.add_argument(
        "--bert-recipes", default=",".join(BERT_RECIPES), help="of: " + ", ".join(BERT_RECIPES)
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory(prefix="kondense-bench-large-", dir=args.workdir) as work:
        for size in (float(s) for s in args.bert.split(",") if s):
            rows = measure_bert(
                size,
                args.bert_recipes.split(","),
                Path(work),
                hidden=args.bert_hidden,
                threads=args.threads,
            )
            failed |= any(run.returncode != 0 for _, _, run, _ in rows)
        for size in (float(s) for s in args.sizes.split(",") if s):
            rows = measure(
                size, args.modes.split(","), Path(work), hidden=args.hidden, threads=args.threads
            )
            failed |= any(run.returncode != 0 for _, _, run, _ in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
