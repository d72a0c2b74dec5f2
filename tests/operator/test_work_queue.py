"""The Reconciler's work queue: however many events ask, a job waits once; jobs without status
(their runner Job still to create) go first; a job is never reconciled by two workers at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client

from kondense.operator.config import OperatorConfig
from kondense.operator.reconcile import Reconciler


class Recording(Reconciler):
    def __init__(self) -> None:
        super().__init__(client.ApiClient(), OperatorConfig.model_construct(pools={}))
        self.calls: list[str] = []
        self.snapshots: list[dict[str, Any] | None] = []
        self.running: set[str] = set()
        self.overlaps = 0

    def reconcile_named(
        self, namespace: str, name: str, snapshot: dict[str, Any] | None = None
    ) -> None:
        self.snapshots.append(snapshot)
        if name in self.running:
            self.overlaps += 1
        self.running.add(name)
        self.calls.append(name)
        time.sleep(0.05)
        self.running.discard(name)


def drain(reconciler: Recording, workers: int) -> None:
    stop = threading.Event()
    threads = [
        threading.Thread(target=reconciler.work_forever, args=(stop,)) for _ in range(workers)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (reconciler._new or reconciler._known):
        time.sleep(0.01)
    time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join()


def test_new_jobs_go_first_and_repeated_requests_wait_once() -> None:
    reconciler = Recording()
    for _ in range(3):
        reconciler.enqueue("ns", "running-a")
        reconciler.enqueue("ns", "running-b")
    reconciler.enqueue("ns", "new-c", new=True)
    drain(reconciler, workers=1)
    assert reconciler.calls == ["new-c", "running-a", "running-b"]


def test_a_job_is_never_reconciled_by_two_workers_at_once() -> None:
    reconciler = Recording()
    for _ in range(20):
        reconciler.enqueue("ns", "same")
        time.sleep(0.01)
    worker = threading.Thread(target=drain, args=(reconciler, 4))
    worker.start()
    for _ in range(20):
        reconciler.enqueue("ns", "same")
        time.sleep(0.01)
    worker.join()
    assert reconciler.overlaps == 0
    assert 2 <= len(reconciler.calls) <= 21


def body(name: str, generation: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "generation": generation},
        **({"status": status} if status else {}),
    }


def test_a_fresh_jobs_event_body_stands_for_the_read_until_another_event_comes() -> None:
    """A job never reconciled is reconciled from the body its event brought; a later event
    while it waits (the object changed since) makes the worker read it again; a body with a
    status or a changed spec is never used."""
    reconciler = Recording()
    reconciler.enqueue("ns", "fresh", new=True, snapshot=body("fresh"))
    drain(reconciler, workers=1)
    reconciler.enqueue("ns", "touched", new=True, snapshot=body("touched"))
    reconciler.enqueue("ns", "touched")
    drain(reconciler, workers=1)
    reconciler.enqueue("ns", "edited", new=True, snapshot=body("edited", generation=2))
    reconciler.enqueue("ns", "known", snapshot=body("known", observedGeneration=1, phase="Running"))
    drain(reconciler, workers=1)
    assert reconciler.calls == ["fresh", "touched", "edited", "known"]
    assert reconciler.snapshots == [body("fresh"), None, None, None]


def test_other_kinds_share_the_queue_keyed_by_kind_and_the_resync_loop() -> None:
    """A CompressionSearch and a CompressionJob of the same name are two entries of one queue;
    the search goes to the reconciler registered for its kind, and the resync loop queues what
    that reconciler says is in flight."""

    class Searches:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def reconcile_named(
            self, namespace: str, name: str, snapshot: dict[str, Any] | None = None
        ) -> None:
            self.calls.append(name)

        def revisit(self, everything: bool) -> set[tuple[str, str]]:
            return {("ns", "in-flight")} if everything else set()

        def forget(self, namespace: str, name: str) -> None:
            self.calls.append(f"forgot {name}")

    reconciler = Recording()
    searches = Searches()
    reconciler.add_kind("CompressionSearch", searches)
    reconciler.enqueue("ns", "same")
    reconciler.enqueue("ns", "same", kind="CompressionSearch")
    drain(reconciler, workers=1)
    assert reconciler.calls == ["same"] and searches.calls == ["same"]
    reconciler.resync(everything=True)
    drain(reconciler, workers=1)
    reconciler.forget("ns", "gone", kind="CompressionSearch")
    assert searches.calls == ["same", "in-flight", "forgot gone"]
