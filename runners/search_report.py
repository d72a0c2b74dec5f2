"""What a local search leaves behind: the table a person reads, search.json, the Pareto chart,
and, when nothing won, advice on what to relax.

Candidates are compared by the ratios each measured against its own baseline (speedup, size
ratio, metric drop), as the operator compares children on different nodes; latencies in the
chart are each child's own and only comparable when the CPUs match, which the table says.
"""

from __future__ import annotations

import json
from typing import Any

from kondense.api.outcome import Results
from kondense.api.search import Candidate, Measured, Round, why_best
from kondense.runners.io import storage
from kondense.runners.pareto import Point, write_chart
from kondense.runners.search import Child, SearchRun

SEARCH_FILE = "search.json"
CHART_FILE = "search.png"


def cpus(run: SearchRun) -> list[str]:
    """The distinct CPUs the children measured on, in the order first seen."""
    seen: list[str] = []
    for child in run.children.values():
        cpu = child.outcome.results.cpu if child.outcome.results else None
        if cpu and cpu not in seen:
            seen.append(cpu)
    return seen


def cpu_note(run: SearchRun) -> str | None:
    found = cpus(run)
    if len(found) < 2:
        return None
    return (
        f"candidates were measured on different CPUs ({'; '.join(found)}): each ratio is "
        "against a baseline measured on the same CPU, but their INT8 kernels differ"
    )


def why(run: SearchRun, winner: Measured) -> str:
    """One line: why the best won, against the runner-up (the operator's words)."""
    names = {c.index: c.name for c in run.candidates}
    return why_best(winner, run.finals, run.search.spec.objective, names)


def advice(run: SearchRun) -> str:
    """Why no candidate won and what to relax: maxMetricDrop, the speed gate or the space."""
    objective = run.search.spec.objective
    measured = [c for c in run.children.values() if c.outcome.results is not None]
    lines = ["no candidate was accepted"]
    if run.timed_out:
        limit = run.search.spec.budget.timeout_seconds
        lines.append(
            f"the search ran out of spec.budget.timeoutSeconds ({limit} s) before every round "
            "ended; raise it"
        )
    if measured:
        least = min(measured, key=lambda c: c.measured().metric_drop or 0.0)
        drop = least.measured().metric_drop or 0.0
        if drop > objective.max_metric_drop:
            lines.append(
                f"the smallest metric drop measured was {drop:.4f} ({least.candidate.name}, "
                f"{least.round.value} round) over spec.objective.maxMetricDrop "
                f"{objective.max_metric_drop:g}: raise maxMetricDrop to at least {drop:.4f}, or "
                "widen spec.space with gentler candidates (per-channel INT8, static INT8 with "
                "calibration data, smaller prune amounts)"
            )
        slower = [c for c in measured if (c.outcome.results and c.outcome.results.speedup < 1)]
        if slower and run.search.spec.evaluation.require_speedup:
            lines.append(
                f"{len(slower)} candidate(s) were slower than their baseline on this CPU: set "
                "spec.evaluation.requireSpeedup: false to keep them, or minimize size"
            )
    failed = [c for c in run.children.values() if c.outcome.results is None]
    for child in failed[:3]:
        first = child.outcome.message.splitlines()[0] if child.outcome.message else ""
        lines.append(f"{child.candidate.name} failed ({child.outcome.reason}): {first}")
    return "; ".join(lines)


def search_table(run: SearchRun) -> Any:
    """One row per candidate, its furthest round's figures; the best marked."""
    from rich.table import Table

    spec = run.search.spec
    winner = run.best
    title = (
        f"kondense search {run.search.name}: minimize {spec.objective.minimize.value}, "
        f"maxMetricDrop {spec.objective.max_metric_drop:g}, {len(run.candidates)} candidates, "
        f"{run.processes} process(es), {run.seconds:.0f} s"
    )
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("candidate", "left"),
        ("recipe", "left"),
        ("round", "left"),
        ("size ratio", "right"),
        ("speedup", "right"),
        ("metric drop", "right"),
        ("accepted", "left"),
        ("", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    front = set(run.pareto)
    for candidate in run.candidates:
        child = run.last(candidate)
        mark = "★ best" if winner and winner.candidate == candidate.index else ""
        if not mark and candidate.index in front:
            mark = "pareto"
        if child is None:
            table.add_row(_label(candidate), candidate.recipe, "-", "", "", "", "not run", mark)
            continue
        measured = child.measured()
        table.add_row(
            _label(candidate),
            candidate.recipe,
            child.round.value,
            _ratio(measured.size_ratio),
            _ratio(measured.speedup),
            f"{measured.metric_drop:.4f}" if measured.metric_drop is not None else "",
            _verdict(run, child),
            mark,
        )
    return table


def search_document(run: SearchRun) -> dict[str, Any]:
    """search.json: every candidate with its rounds' figures and folders, the Pareto front, the
    best and why, the duration, and how much of the space the budget cut."""
    winner = run.best
    names = {c.index: c.name for c in run.candidates}
    return {
        "name": run.search.name,
        "objective": run.search.spec.objective.model_dump(mode="json", by_alias=True),
        "processes": run.processes,
        "durationSeconds": round(run.seconds, 3),
        "timedOut": run.timed_out,
        "spaceSize": run.space_size,
        "cutByBudget": run.space_size - len(run.candidates),
        "cpus": cpus(run),
        "candidates": [_candidate_entry(run, c) for c in run.candidates],
        "pareto": [names[i] for i in run.pareto],
        "best": None if winner is None else _best_entry(run, winner),
        "advice": None if winner is not None else advice(run),
    }


def chart_points(run: SearchRun) -> list[Point]:
    """The fully evaluated candidates (metric = 1 - drop, their compressed latency and size),
    and the baseline as the best's child measured it."""
    points: list[Point] = []
    baseline: Results | None = None
    winner = run.best
    for candidate in run.candidates:
        child = run.children.get((candidate.index, Round.full))
        results = child.outcome.results if child else None
        if results is None:
            continue
        if baseline is None or (winner is not None and winner.candidate == candidate.index):
            baseline = results
        points.append(
            Point(
                name=candidate.name,
                latency_ms=results.compressed.latency_ms_p50,
                metric=1.0 - results.metric_drop,
                size_mb=results.compressed.bytes / 1e6,
            )
        )
    if baseline is not None:
        base = baseline.baseline
        points.append(Point("baseline", base.latency_ms_p50, 1.0, base.bytes / 1e6))
    return points


def write_outputs(run: SearchRun) -> tuple[str, str | None]:
    """search.json and the chart (when a candidate was fully evaluated) at the search's root."""
    document = json.dumps(search_document(run), indent=2) + "\n"
    json_uri = storage.join(run.root, SEARCH_FILE)
    _write(json_uri, document.encode())
    points = chart_points(run)
    if not points:
        return json_uri, None
    chart_uri = storage.join(run.root, CHART_FILE)
    if storage.is_local(chart_uri):
        write_chart(points, storage.local_path(chart_uri), f"kondense search {run.search.name}")
    else:
        from kondense.runners.pareto import render_chart

        _write(chart_uri, render_chart(points, f"kondense search {run.search.name}"))
    return json_uri, chart_uri


# --- helpers ---------------------------------------------------------------------------------


def _candidate_entry(run: SearchRun, candidate: Candidate) -> dict[str, Any]:
    rounds = {}
    for round_ in (Round.screen, Round.full):
        child = run.children.get((candidate.index, round_))
        if child is not None:
            rounds[round_.value] = _child_entry(child)
    last = run.last(candidate)
    return {
        "index": candidate.index,
        "name": candidate.name,
        "recipe": candidate.recipe,
        "device": candidate.device.value,
        "round": last.round.value if last else None,
        "promoted": (candidate.index, Round.full) in run.children,
        "artifact": last.artifact if last else None,
        **rounds,
    }


def _child_entry(child: Child) -> dict[str, Any]:
    results = child.outcome.results
    measured = child.measured()
    entry: dict[str, Any] = {
        "succeeded": child.outcome.succeeded,
        "reason": child.outcome.reason,
        "message": child.outcome.message,
        "accepted": measured.accepted,
        "seconds": round(child.seconds, 3),
        "startedAt": round(child.started, 3),
        "artifact": child.artifact,
    }
    if results is not None:
        entry |= {
            "speedup": results.speedup,
            "sizeRatio": results.size_ratio,
            "metricDrop": results.metric_drop,
            "metricName": results.metric_name,
            "evaluationSamples": results.evaluation_samples,
            "latencyMsP50": results.compressed.latency_ms_p50,
            "bytes": results.compressed.bytes,
            "cpu": results.cpu,
        }
    return entry


def _best_entry(run: SearchRun, winner: Measured) -> dict[str, Any]:
    candidate = run.candidates[winner.candidate]
    child = run.children[(winner.candidate, Round.full)]
    return {
        "candidate": candidate.name,
        "recipe": candidate.recipe,
        "artifact": storage.join(child.artifact, "model.onnx"),
        "speedup": winner.speedup,
        "sizeRatio": winner.size_ratio,
        "metricDrop": winner.metric_drop,
        "why": why(run, winner),
    }


def _verdict(run: SearchRun, child: Child) -> str:
    measured = child.measured()
    if child.round is Round.screen:  # not promoted: `last` returns a promoted one's full round
        return "not promoted" if measured.succeeded else f"no ({child.outcome.reason})"
    if measured.accepted:
        return "yes"
    return f"no ({child.outcome.reason})"


def _label(candidate: Candidate) -> str:
    return f"{candidate.index:02d} {candidate.name}"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else ""


def _write(uri: str, data: bytes) -> None:
    if storage.is_local(uri):
        path = storage.local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    fs, path_in = storage.filesystem(uri)
    fs.pipe(path_in, data)
