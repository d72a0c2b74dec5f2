"""make bench-quality: MiniLM's size / latency / cosine trade-off for each quantization recipe.

One run, one machine, the same inputs for every row: all-MiniLM-L6-v2 at batch 1, sequence
length 128, 2 intra-op threads. Rows:

- ORT FP32: the export step's ONNX model (the reference for speedup and cosine);
- kondense auto (the default, `quantize: {}`) and dynamic INT8: export -> optimize ->
  quantize with the spec defaults, through the same step functions `kondense run` calls, with
  the configs its plan settles (kondense.runners.plan: optimize saves the basic level,
  unfused, before INT8);
- kondense static INT8 and FP16: the same recipe with mode static (calibrated on generated
  sentences that are not evaluated) and fp16;
- baselines as commonly written: onnxruntime.quantization.quantize_dynamic(model,
  weight_type=QuantType.QInt8) on the FP32 export, the same with per_channel=True, and
  torch.ao.quantization.quantize_dynamic on the PyTorch model (nn.Linear, qint8).

Latency: rows take turns in blocks of 10 runs (load changes hit every row alike); medians;
thread pools wait passively so an idle row never steals a core from the timed one.
Cosine: mean over held-out generated sentences of the cosine between the row's sentence
embedding and ORT FP32's, computed by the engine's metric (kondense.runners.measure.evaluate).
More rows: with --with-distill, `bench/quality_distill.py`'s `quality_rows()` are measured in
the same run; with --with-cnns, `bench/cnn.py`'s CNNs (a DB-style text detector and a
MobileNet-style classifier, opset 12 with Constant weights as PyPI OCR models ship) at FP32,
dynamic INT8 and auto. --chart draws every row's latency, metric and size with its Pareto
front. The CPU's model and INT8 flags head the table: its instructions decide INT8 speed.
What the modules share (Row, Candidate, Bench, ...) is in bench/common.py.

    python -m bench.quality [--runs 100] [--with-distill] [--with-cnns] [--json F] [--chart F]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Rows share one process: an idle thread pool that spin-waits (ORT's default, OpenMP's in
# torch) steals a core from the row being timed. Passive waiting keeps rows independent.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from bench import quality_distill
from bench.common import (
    BATCH,
    SEQUENCE,
    THREADS,
    Bench,
    Candidate,
    Feeds,
    Row,
    generate_sentences,
    minilm_path,
    minilm_spec,
    run_planned,
)


@dataclass
class Measured:
    name: str
    size_mb: float
    size_ratio: float
    p50_ms: float
    p95_ms: float
    speedup: float
    cosine: float


# --- rows ------------------------------------------------------------------------------------


def _recipe(bench: Bench, name: str, quantize: dict[str, Any]) -> Candidate:
    """optimize {} -> quantize `quantize` on the FP32 export, through the kondense steps with
    the configs the engine's plan settles for an ONNX model."""
    spec = minilm_spec(
        bench.minilm,
        [{"optimize": {}}, {"quantize": quantize}],
        bench.workdir / name / "out",
        data={"calibration": {"uri": str(bench.calibration), "samples": 320}},
    )
    return Candidate(onnx=run_planned(bench.fp32, spec, bench.workdir / name).path)


def ort_fp32(bench: Bench) -> Candidate:
    return Candidate(onnx=bench.fp32.path)


def kondense_dynamic(bench: Bench) -> Candidate:
    return _recipe(bench, "dynamic", {"mode": "dynamic"})


def kondense_auto(bench: Bench) -> Candidate:
    return _recipe(bench, "auto", {})  # mode omitted: auto, the default


def kondense_static(bench: Bench) -> Candidate:
    return _recipe(bench, "static", {"mode": "static"})


def kondense_fp16(bench: Bench) -> Candidate:
    return _recipe(bench, "fp16", {"mode": "fp16"})


def ort_plain_dynamic(bench: Bench) -> Candidate:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = bench.workdir / "plain-dynamic.onnx"
    quantize_dynamic(str(bench.fp32.path), str(target), weight_type=QuantType.QInt8)
    return Candidate(onnx=target)


def ort_per_channel_dynamic(bench: Bench) -> Candidate:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = bench.workdir / "per-channel-dynamic.onnx"
    quantize_dynamic(
        str(bench.fp32.path), str(target), weight_type=QuantType.QInt8, per_channel=True
    )
    return Candidate(onnx=target)


def torch_dynamic(bench: Bench) -> Candidate:
    import torch

    from kondense.api.spec import ModelFormat, Task
    from kondense.runners.core import Model
    from kondense.runners.model import torch_modules

    torch.set_num_threads(THREADS)
    module = torch_modules.load_torch_module(
        Model(path=bench.minilm, format=ModelFormat.huggingface), Task.text_embedding
    )
    quantized = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
    names = torch_modules.module_signature(module, None)
    buffer = io.BytesIO()
    torch.save(quantized.state_dict(), buffer)  # our own object: size only, never loaded

    def run(feeds: Feeds) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(quantized(*[torch.from_numpy(feeds[n]) for n in names]).numpy())

    return Candidate(run=run, bytes=buffer.getbuffer().nbytes)


ROWS: list[Row] = [
    Row("ORT FP32", ort_fp32),
    Row("kondense auto (default)", kondense_auto),
    Row("kondense dynamic INT8", kondense_dynamic),
    Row("kondense static INT8", kondense_static),
    Row("kondense FP16", kondense_fp16),
    Row("ORT quantize_dynamic (plain)", ort_plain_dynamic),
    Row("ORT quantize_dynamic per-channel", ort_per_channel_dynamic),
    Row("torch quantize_dynamic", torch_dynamic),
]


# --- measurement -----------------------------------------------------------------------------


def _runner(candidate: Candidate) -> Callable[[Feeds], np.ndarray]:
    if candidate.run is not None:
        return candidate.run
    import onnxruntime as ort

    assert candidate.onnx is not None
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(candidate.onnx), options, providers=["CPUExecutionProvider"])
    accepted = {i.name for i in session.get_inputs()}

    def run(feeds: Feeds) -> np.ndarray:
        return np.asarray(session.run(None, {k: v for k, v in feeds.items() if k in accepted})[0])

    return run


def _size(candidate: Candidate) -> int:
    if candidate.onnx is None:
        return candidate.bytes
    from kondense.runners.model import onnx_files

    return onnx_files.onnx_size_bytes(candidate.onnx)


def embed(run: Callable[[Feeds], np.ndarray], feeds: Feeds, chunk: int = 16) -> np.ndarray:
    """Sentence embeddings [N, H], pooled as the engine pools token states for its metric."""
    from kondense.runners.measure.evaluate import mean_pool

    count = len(next(iter(feeds.values())))
    parts = []
    for i in range(0, count, chunk):
        part = {k: v[i : i + chunk] for k, v in feeds.items()}
        parts.append(mean_pool(run(part), part.get("attention_mask")))
    embeddings = np.concatenate(parts).astype(np.float64)
    assert embeddings.ndim == 2, f"expected sentence embeddings, got {embeddings.shape}"
    return embeddings


def tokenize(tokenizer_dir: Path, texts: list[str]) -> Feeds:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    encoded = tokenizer(
        texts, padding="max_length", truncation=True, max_length=SEQUENCE, return_tensors="np"
    )
    return {k: v.astype(np.int64) for k, v in encoded.items()}


def latencies(
    runners: dict[str, Callable[[Feeds], np.ndarray]],
    feeds: Feeds,
    runs: int,
    warmup: int = 10,
    block: int = 10,
) -> dict[str, list[float]]:
    """Per-row latencies in ms: rows take turns in blocks of `block` runs, so a busy neighbour
    slows every row alike instead of whichever row happened to be timed at that moment."""
    for run in runners.values():
        for _ in range(warmup):
            run(feeds)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(max(1, runs // block)):
        for name, run in runners.items():
            run(feeds)  # one untimed run after switching rows: caches hold the other model
            for _ in range(block):
                started = time.perf_counter()
                run(feeds)
                times[name].append((time.perf_counter() - started) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="timed runs per row")
    parser.add_argument("--sentences", type=int, default=200, help="held-out sentences")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    parser.add_argument(
        "--with-distill", action="store_true", help="add bench/quality_distill.py's rows"
    )
    parser.add_argument("--only", nargs="*", default=None, help="row names to run (FP32 always)")
    parser.add_argument(
        "--with-cnns", action="store_true", help="add bench/cnn.py's CNN rows (FP32, dynamic, auto)"
    )
    parser.add_argument(
        "--chart", type=Path, default=None, help="write the Pareto chart (PNG) of every row here"
    )
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(THREADS)
    from kondense.api.spec import ModelFormat
    from kondense.runners.core import Model
    from kondense.runners.measure.evaluate import mean_cosine

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as scratch:
        workdir = Path(scratch)
        minilm = minilm_path()
        # Calibration and evaluation sentences come from different seeds: nothing is evaluated
        # on what static INT8 calibrated on.
        generate_sentences(workdir / "calibration.jsonl", 320, seed=11)
        evaluation = generate_sentences(workdir / "evaluation.jsonl", args.sentences, seed=23)
        # The engine's baseline: the plan's export of MiniLM with default settings.
        fp32 = run_planned(
            Model(path=minilm, format=ModelFormat.huggingface),
            minilm_spec(minilm, [{"export": {}}], workdir / "export" / "out"),
            workdir / "export",
        )
        bench = Bench(workdir, minilm, fp32, workdir / "calibration.jsonl", evaluation)
        rows = [*ROWS, *(quality_distill.quality_rows() if args.with_distill else [])]
        if args.only:
            rows = [r for r in rows if r is ROWS[0] or r.name in args.only]
        candidates: dict[str, Candidate] = {}
        for row in rows:
            started = time.perf_counter()
            candidates[row.name] = row.build(bench)
            print(f"built {row.name} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        runners = {name: _runner(c) for name, c in candidates.items()}
        assets = fp32.assets
        assert assets is not None
        eval_feeds = tokenize(assets, evaluation)
        reference = embed(runners[ROWS[0].name], eval_feeds)
        one = {k: v[:BATCH] for k, v in tokenize(assets, [evaluation[0] * 8]).items()}
        times = latencies(runners, one, args.runs)
        base_size = _size(candidates[ROWS[0].name])
        base_p50 = float(np.median(times[ROWS[0].name]))
        table = [
            Measured(
                name=name,
                size_mb=_size(candidates[name]) / 1e6,
                size_ratio=base_size / _size(candidates[name]),
                p50_ms=float(np.median(times[name])),
                p95_ms=float(np.percentile(times[name], 95)),
                speedup=base_p50 / float(np.median(times[name])),
                cosine=mean_cosine(embed(runners[name], eval_feeds), reference),
            )
            for name in runners
        ]
    print_cpu()
    print_table(table, args.runs, len(evaluation))
    cnns = []
    if args.with_cnns:
        from bench.cnn import measure_cnns, print_figures

        with tempfile.TemporaryDirectory(prefix="bench-cnn-") as scratch:
            cnns = measure_cnns(Path(scratch), runs=args.runs)
        print_figures(cnns)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"minilm": [asdict(m) for m in table], "cnns": [asdict(f) for f in cnns]}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    if args.chart:
        print(f"chart: {write_pareto(table, cnns, args.chart)}")
    return 0


def print_cpu() -> None:
    """The CPU the figures come from: INT8 speed and accuracy depend on its instructions."""
    from kondense.runners.measure.cpu import cpu_info

    cpu = cpu_info()
    print(f"\nCPU: {cpu.model} | INT8 kind {cpu.int8_dot_product} | flags {' '.join(cpu.flags)}")


def write_pareto(table: list[Measured], cnns: list[Any], path: Path) -> Path:
    """Latency against metric against size, one panel per model, the Pareto front marked."""
    from kondense.runners.pareto import Point, write_chart

    points = [
        Point(m.name, m.p50_ms, m.cosine, m.size_mb, "MiniLM-L6 (cosine vs ORT FP32)")
        for m in table
    ]
    points += [
        Point(f.recipe, f.p50_ms, f.agreement, f.bytes / 1e6, f"{f.model} (agreement vs FP32)")
        for f in cnns
        if f.p50_ms is not None and f.agreement is not None
    ]
    return write_chart(points, path, f"kondense bench-quality, {THREADS} threads, batch {BATCH}")


def print_table(table: list[Measured], runs: int, sentences: int) -> None:
    print(
        f"\nMiniLM-L6 | batch {BATCH}, sequence {SEQUENCE}, {THREADS} threads, {runs} runs, "
        f"cosine over {sentences} held-out sentences vs ORT FP32 | cpus {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    header = f"{'recipe':34s} {'size MB':>8s} {'ratio':>6s} {'p50 ms':>8s} {'p95 ms':>8s} "
    print(header + f"{'speedup':>8s} {'cosine':>8s}")
    for m in table:
        print(
            f"{m.name:34s} {m.size_mb:8.2f} {m.size_ratio:5.2f}x {m.p50_ms:8.2f} {m.p95_ms:8.2f} "
            f"{m.speedup:7.2f}x {m.cosine:8.4f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
