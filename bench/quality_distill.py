"""Benchmark rows for the combined recipes on MiniLM: distilled 3-layer (+ INT8) vs ORT FP32.

Each row is one real `kondense run` of a recipe (the engine, on this machine): the baseline is
all-MiniLM-L6-v2 exported to ONNX FP32 and run by ONNX Runtime; the result is the recipe's
output. Cosine is the mean cosine between the result's and the original's sentence embeddings
on held-out domain text (examples/data/domain-heldout.jsonl), which the student never saw.

    python -m bench.quality_distill [--out out/bench-distill] [--epochs 3]

Training dominates the run time (minutes on two CPU cores); latency is the median of the
engine's interleaved benchmark at batch 1, sequence length 128.

`quality_rows()` gives the same recipes as rows of `make bench-quality` (bench/quality.py
--with-distill), measured there side by side with the quantization rows on its held-out
general sentences: the student is distilled once, on other generated general sentences.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bench.common import (
    ROOT,
    Bench,
    Candidate,
    Row,
    generate_sentences,
    minilm_path,
    minilm_spec,
    run_planned,
)

if TYPE_CHECKING:
    from kondense.runners.core import Model

EXAMPLE = ROOT / "examples" / "minilm-distill-int8.yaml"


@dataclass(frozen=True)
class RecipeRow:
    """One line of this module's own quality table (one `kondense run` of a recipe)."""

    recipe: str
    size_mb: float
    latency_ms_p50: float
    speedup_vs_fp32: float
    metric: str
    value: float
    baseline_size_mb: float
    baseline_latency_ms_p50: float


def recipe_manifest(steps: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """The MiniLM distillation example with `steps` after its distill step."""
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = manifest["spec"]
    spec["model"]["uri"] = str(minilm_path())
    for source in spec["data"].values():
        source["uri"] = str(EXAMPLE.parent / source["uri"])
    distill = spec["steps"][0]
    distill["distill"]["training"]["epochs"] = epochs
    spec["steps"] = [distill, *steps]
    return manifest


RECIPES: dict[str, list[dict[str, Any]]] = {
    "distill 3-layer -> export -> optimize -> INT8 dynamic": [
        {"export": {"opset": 17}},
        {"optimize": {"level": "extended", "transformer": "auto"}},
        {"quantize": {"mode": "dynamic"}},
    ],
    "distill 3-layer -> export (FP32)": [{"export": {"opset": 17}}],
}


def run_recipe(name: str, steps: list[dict[str, Any]], out: Path, epochs: int) -> RecipeRow:
    from kondense.api.spec import CompressionJob
    from kondense.runners.engine import run_job

    job = CompressionJob.model_validate(recipe_manifest(steps, epochs))
    # Gates off: a benchmark reports what it measured instead of failing.
    evaluation = job.spec.evaluation.model_copy(
        update={"max_metric_drop": 1.0, "require_speedup": False}
    )
    job = job.model_copy(update={"spec": job.spec.model_copy(update={"evaluation": evaluation})})
    report = run_job(job, str(out / name.split(" ->")[0].replace(" ", "-")))
    results = report.results
    assert results is not None
    return RecipeRow(
        recipe=name,
        size_mb=round(results.compressed.bytes / 1e6, 2),
        latency_ms_p50=round(results.compressed.latency_ms_p50, 3),
        speedup_vs_fp32=round(results.speedup, 2),
        metric=results.metric_name,
        value=round(results.compressed.metric or 0.0, 4),
        baseline_size_mb=round(results.baseline.bytes / 1e6, 2),
        baseline_latency_ms_p50=round(results.baseline.latency_ms_p50, 3),
    )


def rows(out: Path, epochs: int = 3, recipes: list[str] | None = None) -> list[RecipeRow]:
    """Run each recipe (all by default) and return its row."""
    chosen = recipes or list(RECIPES)
    return [run_recipe(name, RECIPES[name], out, epochs) for name in chosen]


def markdown(table: list[RecipeRow]) -> str:
    lines = [
        "| recipe | size MB (FP32) | p50 ms (FP32) | speedup vs ORT FP32 | mean cosine |",
        "|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(
            f"| {row.recipe} | {row.size_mb} ({row.baseline_size_mb}) | {row.latency_ms_p50} "
            f"({row.baseline_latency_ms_p50}) | {row.speedup_vs_fp32}x | {row.value} |"
        )
    return "\n".join(lines)


# --- rows for bench/quality.py ------------------------------------------------------------

STUDENT_SENTENCES = 2000
STUDENT_EPOCHS = 3
_students: dict[Path, Model] = {}


def distilled_student(bench: Bench) -> Model:
    """MiniLM distilled into 3 layers (task-specific, through the distill step) on generated
    general sentences none of which is in the bench's evaluation set; built once per run."""
    if bench.workdir in _students:
        return _students[bench.workdir]
    from kondense.api.spec import ModelFormat
    from kondense.runners.core import Model, StepContext
    from kondense.runners.steps import load_step

    texts = generate_sentences(bench.workdir / "distill-all.jsonl", STUDENT_SENTENCES, seed=5)
    held_out = set(bench.evaluation)
    training = bench.workdir / "distill-train.jsonl"
    training.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts if t not in held_out))
    distill = {
        "mode": "task-specific",
        "student": {"keepEvery": 2},
        "training": {"epochs": STUDENT_EPOCHS, "learningRate": 3e-4, "seed": 0},
    }
    workdir = bench.workdir / "distill"
    spec = minilm_spec(
        bench.minilm,
        [{"distill": distill}],
        workdir / "out",
        data={"training": {"uri": str(training), "samples": STUDENT_SENTENCES}},
    )
    # The step itself, not the plan: the plan would export the student, and each recipe below
    # exports it with its own settings.
    workdir.mkdir(parents=True)
    ctx = StepContext.for_spec(spec, workdir)
    teacher = Model(path=bench.minilm, format=ModelFormat.huggingface, assets=bench.minilm)
    student = load_step("distill")(teacher, spec.steps[0].config, ctx)
    _students[bench.workdir] = student
    return student


def _student_recipe(bench: Bench, name: str, steps: list[dict[str, Any]]) -> Candidate:
    """The distilled student through export and `steps`, as the engine plans them."""
    spec = minilm_spec(bench.minilm, [{"export": {}}, *steps], bench.workdir / name / "out")
    return Candidate(onnx=run_planned(distilled_student(bench), spec, bench.workdir / name).path)


def quality_rows() -> list[Row]:
    """Rows for `make bench-quality`: the distilled 3-layer student, FP32 and INT8."""
    return [
        Row("distilled 3-layer FP32", lambda b: _student_recipe(b, "distilled-fp32", [])),
        Row(
            "distilled 3-layer + INT8 dynamic",
            lambda b: _student_recipe(
                b, "distilled-int8", [{"optimize": {}}, {"quantize": {"mode": "dynamic"}}]
            ),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-distill")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--recipe", action="append", choices=list(RECIPES))
    args = parser.parse_args()
    table = rows(args.out, args.epochs, args.recipe)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps([asdict(r) for r in table], indent=2) + "\n")
    print(markdown(table))


if __name__ == "__main__":
    main()
