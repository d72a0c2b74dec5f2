"""`make bench-search`: one CompressionSearch run locally in sequence (--processes 1) and with
two processes (--processes 2), wall time side by side with their ratio, and what each run
chose (best, candidates screened and fully evaluated), with the CPU's INT8 flags.

    python -m bench.search examples/digits-search.yaml [examples/minilm-search.yaml ...]

Each run is a fresh `kondense search` process writing under build/bench-search/, so the
parallel run pays its workers' start-up (spawned interpreters importing torch and ONNX
Runtime) as a user would. The two processes are pinned to half of the CPUs each, as the
runner pods of a cluster would have their own nodes: with few cores, each child's steps run
on fewer threads, and the ratio shows what is left once that is paid.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT

OUT = ROOT / "build" / "bench-search"


@dataclass(frozen=True)
class SearchRun:
    manifest: str
    processes: int
    seconds: float
    code: int
    best: str
    screened: int
    full: int


def run_search(manifest: Path, processes: int) -> SearchRun:
    """`kondense search manifest --processes N` in a fresh process, timed from outside."""
    output = OUT / f"{manifest.stem}-p{processes}"
    command = [
        str(Path(sys.executable).with_name("kondense")),
        "search",
        str(manifest),
        "--output",
        str(output),
        "--processes",
        str(processes),
    ]
    log = OUT / f"{manifest.stem}-p{processes}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.monotonic()
    with log.open("w") as stream:
        code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.monotonic() - started
    result = json.loads((output / "search.json").read_text())
    best = result["best"]
    return SearchRun(
        manifest=manifest.name,
        processes=processes,
        seconds=seconds,
        code=code,
        best=f"{best['candidate']} ({best['speedup']:.2f}x)" if best else "none",
        screened=sum(1 for c in result["candidates"] if "screen" in c),
        full=sum(1 for c in result["candidates"] if "full" in c),
    )


def table(pairs: list[tuple[SearchRun, SearchRun]]) -> str:
    header = (
        f"{'search':<22} {'seq. s':>8} {'2 proc. s':>10} {'ratio':>6}  {'screened':>8} "
        f"{'full':>5}  best (sequential | 2 processes)"
    )
    lines = [header, "-" * len(header)]
    for one, two in pairs:
        lines.append(
            f"{one.manifest:<22} {one.seconds:>8.1f} {two.seconds:>10.1f} "
            f"{one.seconds / two.seconds:>5.2f}x  {one.screened:>8} {one.full:>2}|{two.full:<2}  "
            f"{one.best} | {two.best}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("manifests", nargs="+", type=Path, help="CompressionSearch manifests")
    args = parser.parse_args(argv)
    from kondense.runners.measure.cpu import cpu_info

    cpu = cpu_info()
    print(f"CPU: {cpu.model}, {os.cpu_count()} CPUs, INT8 dot product {cpu.int8_dot_product}")
    print(f"flags: {' '.join(cpu.flags) or 'none'}", flush=True)
    pairs = []
    for manifest in args.manifests:
        runs = []
        for processes in (1, 2):
            print(f"{manifest.name}: --processes {processes} ...", flush=True)
            runs.append(run_search(manifest, processes))
        pairs.append((runs[0], runs[1]))
    print(table(pairs))
    print(f"logs and outputs: {OUT}")
    failed = [r for pair in pairs for r in pair if r.code != 0]
    for run in failed:
        print(f"{run.manifest} --processes {run.processes}: exit {run.code}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
