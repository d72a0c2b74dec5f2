"""The model card written beside every compressed model: README.md in Hugging Face's format.

YAML front matter (base_model, library_name, tags, pipeline_tag) that the Hub and its tools
read, then the recipe and the measured trade-off, so whoever finds the folder learns what the
model is, how it was made and what it costs in quality, without report.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from kondense.api.outcome import Report, Results
from kondense.api.spec import CompressionJobSpec, Task
from kondense.api.steps import recipe_label

CARD_NAME = "README.md"
# The Hub's pipeline tags for the tasks kondense knows.
PIPELINE_TAGS = {
    Task.text_embedding: "sentence-similarity",
    Task.text_classification: "text-classification",
    Task.image_classification: "image-classification",
}


def base_model(spec: CompressionJobSpec, assets: Path | None) -> str:
    """The model this one was made from: the Hub id its config.json names (`org/name`), else
    the name of the model file or folder."""
    config = assets / "config.json" if assets is not None else None
    if config is not None and config.is_file():
        try:
            name = json.loads(config.read_text()).get("_name_or_path")
        except (ValueError, AttributeError):
            name = None
        if isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/")):
            return name
    return Path(spec.model.uri.rstrip("/")).name or spec.model.uri


def model_card(name: str, spec: CompressionJobSpec, report: Report, base: str) -> str:
    """README.md for the compressed model `name`, from its spec and report."""
    recipe = recipe_label(spec.steps)
    front: dict[str, object] = {
        "base_model": base,
        "library_name": "onnx",
        "tags": ["kondense", "onnx", *recipe.split(">")],
    }
    if spec.model.task in PIPELINE_TAGS:
        front["pipeline_tag"] = PIPELINE_TAGS[spec.model.task]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"`{base}` compressed by kondense with the recipe `{recipe}`. `model.onnx` runs with "
        "ONNX Runtime; `report.json` holds every figure below and the step notes.",
        "",
    ]
    if report.results is not None:
        lines += _results_section(report.results)
    lines += ["## Steps", ""]
    for step in report.steps:
        notes = ", ".join(f"{k}: {v}" for k, v in (step.notes or {}).items())
        lines.append(f"- `{step.name}` ({step.seconds:.1f} s)" + (f": {notes}" if notes else ""))
    if report.environment is not None:
        env = report.environment
        versions = ", ".join(f"{k} {v}" for k, v in env.packages.items())
        cpu = f"; {env.cpu.model} ({env.cpu.int8_dot_product})" if env.cpu else ""
        lines += ["", f"Made with Python {env.python}, {versions}{cpu}."]
    return "\n".join(lines) + "\n"


def _results_section(results: Results) -> list[str]:
    base, comp = results.baseline, results.compressed
    rows = [
        ("size (MB)", f"{base.bytes / 1e6:.2f}", f"{comp.bytes / 1e6:.2f}"),
        ("latency p50 (ms)", f"{base.latency_ms_p50:.3f}", f"{comp.latency_ms_p50:.3f}"),
        ("latency p95 (ms)", f"{base.latency_ms_p95:.3f}", f"{comp.latency_ms_p95:.3f}"),
        ("throughput (/s)", f"{base.throughput:.1f}", f"{comp.throughput:.1f}"),
        (results.metric_name, _metric(base.metric), _metric(comp.metric)),
    ]
    where = (
        f"{results.device}, {results.threads} threads, batch {results.batch_size}"
        + (f", sequence {results.sequence_length}" if results.sequence_length else "")
        + f"; {results.metric_name} on {results.measured_on()}"
    )
    section = [
        "## Measured",
        "",
        f"Baseline and result measured side by side ({where}): {results.size_ratio:.2f}x "
        f"smaller, {results.speedup:.2f}x the speed, {results.metric_name} drop "
        f"{results.metric_drop:.4f}.",
        "",
        "| | baseline | compressed |",
        "|---|---|---|",
        *(f"| {label} | {before} | {after} |" for label, before, after in rows),
        "",
    ]
    if results.verdict:
        status = "accepted" if results.accepted else "REJECTED"
        section += [f"**{status}**: {results.verdict}", ""]
    return section


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"
