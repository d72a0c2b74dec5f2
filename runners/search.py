"""`kondense search`: a CompressionSearch on one machine, in sequence or in N processes.

The decisions are the operator's (kondense.api.search): the same candidates, screening round,
promotion, best and Pareto front. Here each child is a CompressionJob run exactly as
`kondense run` runs one (runners/local_run.py), in this process or in a pool of spawned
worker processes, each pinned to its own share of the CPUs as a pod is to its node's, so that
the ratios a candidate measures against its own baseline are not skewed by its neighbours.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kondense.api.errors import BadInput
from kondense.api.manifest import load_manifest_text, validation_problems
from kondense.api.outcome import Outcome
from kondense.api.search import (
    SEARCH_KIND,
    Candidate,
    CompressionSearch,
    Measured,
    Round,
    best,
    candidates,
    child_name,
    child_spec,
    next_children,
    pareto,
    space_size,
)
from kondense.api.spec import API_GROUP, API_VERSION, Output
from kondense.api.steps import DeviceClass
from kondense.runners.io import storage

Key = tuple[int, Round]


@dataclass(frozen=True)
class Child:
    """One candidate's run in one round, as it ended."""

    candidate: Candidate
    round: Round
    outcome: Outcome
    seconds: float
    started: float  # Unix time: children of a pool overlap
    artifact: str  # the child's output folder (spec.output.uri of its CompressionJob)

    def measured(self) -> Measured:
        results = self.outcome.results
        return Measured(
            candidate=self.candidate.index,
            round=self.round,
            finished=True,
            succeeded=self.outcome.succeeded,
            speedup=results.speedup if results else None,
            size_ratio=results.size_ratio if results else None,
            metric_drop=results.metric_drop if results else None,
            accepted=bool(results is not None and results.accepted and self.outcome.succeeded),
            reason=self.outcome.reason,
        )


@dataclass
class SearchRun:
    """What a local search did: its candidates, every child that ran, and the decision."""

    search: CompressionSearch
    root: str  # where the children's folders, search.json and the chart go
    candidates: list[Candidate]
    space_size: int
    processes: int
    children: dict[Key, Child] = field(default_factory=dict)
    seconds: float = 0.0
    timed_out: bool = False

    @property
    def finals(self) -> list[Measured]:
        return [c.measured() for c in self.children.values() if c.round is Round.full]

    @property
    def best(self) -> Measured | None:
        return best(self.finals, self.search.spec.objective)

    @property
    def pareto(self) -> list[int]:
        return pareto(self.finals)

    def last(self, candidate: Candidate) -> Child | None:
        """The candidate's furthest round: full when it was promoted, else its screening."""
        for round_ in (Round.full, Round.screen):
            child = self.children.get((candidate.index, round_))
            if child is not None:
                return child
        return None


def is_search(path: Path) -> bool:
    """Whether the manifest at `path` says kind: CompressionSearch (False when unreadable:
    reading it as a job then reports the problem)."""
    try:
        document = load_manifest_text(path.read_text(encoding="utf-8"), str(path))
    except (OSError, BadInput):
        return False
    return isinstance(document, dict) and document.get("kind") == SEARCH_KIND


def read_search(path: Path) -> CompressionSearch:
    """The CompressionSearch manifest at `path`; BadInput listing every problem, one a line."""
    if not path.is_file():
        raise BadInput(f"{path}: no such manifest file")
    document = load_manifest_text(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(document, dict):
        raise BadInput(f"{path}: expected a CompressionSearch mapping")
    try:
        return CompressionSearch.model_validate(document)
    except ValidationError as error:
        raise BadInput("\n".join(f"{path}: {p}" for p in validation_problems(error))) from error


def local_devices() -> set[DeviceClass]:
    """The CPU, and the GPU when ONNX Runtime here has CUDA (fp16 candidates need it)."""
    import onnxruntime as ort

    from kondense.runners.measure.inference import CUDA

    devices = {DeviceClass.cpu}
    if CUDA in ort.get_available_providers():
        devices.add(DeviceClass.gpu)
    return devices


def run_search(
    search: CompressionSearch,
    *,
    base_dir: Path,
    output: str | None = None,
    processes: int = 1,
    devices: set[DeviceClass] | None = None,
    on_child: Callable[[Child], None] = lambda child: None,
) -> SearchRun:
    """Run every child the search's plan asks for until it is done, `processes` at a time.

    Relative paths resolve against `base_dir` (the manifest's folder) as `kondense run`'s do;
    `output` overrides spec.output.uri, relative to the working directory. `on_child` hears
    of each child as it ends. A failing child is a candidate's outcome, never an exception.
    """
    devices = devices if devices is not None else local_devices()
    spec = search.spec
    root = (
        storage.resolve(output, Path.cwd())
        if output
        else storage.resolve(spec.output.uri, base_dir)
    )
    storage.is_local(root)  # refuses unknown schemes before any work
    # Locally the processes are the parallelism; budget.parallelism is the cluster's.
    spec = spec.model_copy(
        update={
            "output": Output(uri=root),
            "budget": spec.budget.model_copy(update={"parallelism": processes}),
        }
    )
    search = search.model_copy(update={"spec": spec})
    found = candidates(spec, devices)
    if not found:
        raise BadInput(
            "spec.space: no candidate can run on this machine (fp16 needs a GPU with ONNX "
            "Runtime's CUDA provider); add INT8, prune or distill candidates"
        )
    run = SearchRun(
        search=search,
        root=root,
        candidates=found,
        space_size=space_size(spec, devices),
        processes=processes,
    )
    started = time.monotonic()
    with _Children(processes) as pool:
        running: dict[Key, Measured] = {}
        while True:
            elapsed = time.monotonic() - started
            run.timed_out = elapsed >= spec.budget.timeout_seconds
            reported = [c.measured() for c in run.children.values()] + list(running.values())
            plan = next_children(spec, len(found), reported, timed_out=run.timed_out)
            for index, round_ in plan.start:
                candidate = found[index]
                job = _child_job(search, candidate, round_)
                seconds = spec.budget.timeout_seconds - elapsed
                pool.submit((index, round_), job, base_dir, seconds)
                running[(index, round_)] = Measured(candidate=index, round=round_, finished=False)
            if plan.done or not running:
                break
            for ended in pool.next_done():
                index, round_ = key = ended.key
                del running[key]
                child = Child(
                    candidate=found[index],
                    round=round_,
                    outcome=ended.outcome,
                    seconds=ended.seconds,
                    started=ended.started,
                    artifact=child_spec(spec, found[index], round_).output.uri,
                )
                run.children[key] = child
                on_child(child)
    run.seconds = time.monotonic() - started
    return run


def _child_job(search: CompressionSearch, candidate: Candidate, round_: Round) -> dict[str, Any]:
    """The child CompressionJob manifest, as JSON (it crosses into a worker process)."""
    spec = child_spec(search.spec, candidate, round_)
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "CompressionJob",
        "metadata": {"name": child_name(search.name, candidate, round_)},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


# --- running children ------------------------------------------------------------------------


def run_child(document: dict[str, Any], base_dir: str, seconds: float) -> dict[str, Any]:
    """One child CompressionJob run as `kondense run` runs it; its Outcome as JSON and its
    wall time. Module-level: a spawned worker process imports and calls it."""
    from kondense.api.manifest import parse_job
    from kondense.runners.local_run import run_to_outcome

    started, clock = time.time(), time.monotonic()
    stage = _Stage()
    job = parse_job(document, document["metadata"]["name"])
    ran = run_to_outcome(
        job, None, stage, stage.doing, base_dir=Path(base_dir), seconds=max(1.0, seconds)
    )
    seconds = time.monotonic() - clock
    return {"outcome": ran.outcome.to_json_dict(), "seconds": seconds, "started": started}


class _Stage:
    """A child's progress, kept only to say what it was doing when its deadline passed."""

    def __init__(self) -> None:
        self.description = "starting"

    def __call__(self, description: str, completed: float, total: float | None) -> None:
        self.description = description

    def doing(self) -> str:
        return self.description


class _Children:
    """Children run in this process one after another (processes=1), or in a pool of spawned
    workers, each pinned to its share of the CPUs."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[Future[dict[str, Any]], tuple[Key, ProcessPoolExecutor]] = {}
        self._done: list[Ended] = []

    def __enter__(self) -> _Children:
        if self.processes > 1:
            self._pool = _new_pool(self.processes)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, key: Key, document: dict[str, Any], base_dir: Path, seconds: float) -> None:
        if self._pool is None:
            self._done.append(_ended(key, lambda: run_child(document, str(base_dir), seconds)))
            return
        future = self._pool.submit(run_child, document, str(base_dir), seconds)
        self._futures[future] = (key, self._pool)

    def next_done(self) -> list[Ended]:
        """The children that ended since the last call; waits for one when none has."""
        if not self._done and self._futures:
            finished, _ = wait(self._futures, return_when=FIRST_COMPLETED)
            for future in finished:
                key, pool = self._futures.pop(future)
                self._done.append(_ended(key, future.result))
                if isinstance(future.exception(), BrokenProcessPool) and pool is self._pool:
                    # A worker died (out of memory, a crash in native code): every child of
                    # that pool failed with it; the children still to come get a fresh pool.
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = _new_pool(self.processes)
        done, self._done = self._done, []
        return done


@dataclass(frozen=True)
class Ended:
    key: Key
    outcome: Outcome
    seconds: float = 0.0
    started: float = 0.0


def _ended(key: Key, result: Callable[[], dict[str, Any]]) -> Ended:
    try:
        ended = result()
    except BrokenProcessPool as error:
        message = f"the worker process running it died ({error}); out of memory?"
        return Ended(key, Outcome(succeeded=False, reason="RunnerFailed", message=message))
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        return Ended(key, Outcome(succeeded=False, reason="RunnerFailed", message=message))
    outcome = Outcome.model_validate(ended["outcome"])
    return Ended(key, outcome, float(ended["seconds"]), float(ended["started"]))


def _new_pool(processes: int) -> ProcessPoolExecutor:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no forked torch or ONNX Runtime state
    counter = context.Value("i", 0)
    return ProcessPoolExecutor(
        max_workers=processes,
        mp_context=context,
        initializer=_pin_worker,
        initargs=(counter, processes),
    )


def _pin_worker(counter: Any, processes: int) -> None:
    """Give the k-th worker the k-th share of this machine's CPUs (at least one), as a runner
    pod has its own node's: evaluation.threads 0 then resolves to that share."""
    with counter.get_lock():
        worker = counter.value
        counter.value += 1
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no pinning
        return
    share = max(1, len(cpus) // processes)
    start = (worker % processes) * share % len(cpus)
    os.sched_setaffinity(0, cpus[start : start + share] or cpus[:share])
