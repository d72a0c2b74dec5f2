"""Every apiserver call of a reconcile has a timeout: a hung call must not hold the
CompressionJob's lock forever. The 'apiserver' here accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
import time

from kubernetes import client

from kondense.operator.config import parse_config
from kondense.operator.reconcile import Reconciler

CONFIG = {"pools": {"cpu": {"image": "runner:1"}}}


def test_a_call_the_apiserver_never_answers_gives_up_and_frees_the_lock() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel accepts; nobody ever reads or writes
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        configuration.retries = 0
        reconciler = Reconciler(
            client.ApiClient(configuration), parse_config(CONFIG, "test"), request_timeout=1.0
        )
        outcome: list[BaseException | None] = []

        def reconcile() -> None:
            try:
                reconciler.reconcile_named("ns", "stuck")
                outcome.append(None)
            except BaseException as error:  # what the caller (kopf, resync) would see
                outcome.append(error)

        started = time.monotonic()
        worker = threading.Thread(target=reconcile, daemon=True)
        worker.start()
        worker.join(timeout=15)
        assert not worker.is_alive(), "the reconcile still hangs on an unanswered call"
        assert time.monotonic() - started < 10
        assert outcome and outcome[0] is not None  # it failed (and is retried by resync)
        assert reconciler._lock("ns", "stuck").acquire(timeout=1)


def test_a_reconcile_that_runs_far_too_long_turns_the_liveness_probe_red() -> None:
    """Whatever hangs a reconcile beyond every call's timeout (native code, a lock), the
    probe (kopf's /healthz answers 500 when a probe handler fails) restarts the operator."""
    import kopf
    import pytest

    from kondense.operator import handlers
    from kondense.operator.handlers import STUCK_RECONCILE_S

    reconciler = Reconciler(client.ApiClient(client.Configuration()), parse_config(CONFIG, "t"))
    memo = kopf.Memo({handlers.MEMO_KEY: reconciler})
    assert handlers.reconcile_probe(memo=memo) == 0
    reconciler._started[("CompressionJob", "ns", "slow")] = time.monotonic() - 5
    assert 4 < handlers.reconcile_probe(memo=memo) < STUCK_RECONCILE_S
    reconciler._started[("CompressionJob", "ns", "stuck")] = (
        time.monotonic() - STUCK_RECONCILE_S - 1
    )
    with pytest.raises(kopf.PermanentError, match="CompressionJob ns/stuck"):
        handlers.reconcile_probe(memo=memo)


def test_a_search_reconcile_a_worker_runs_counts_for_the_liveness_probe() -> None:
    """The probe sees every kind the workers reconcile, not only CompressionJobs."""
    reconciler = Reconciler(client.ApiClient(client.Configuration()), parse_config(CONFIG, "t"))
    inside, release = threading.Event(), threading.Event()

    class Hanging:
        def reconcile_named(self, namespace: str, name: str, snapshot: object = None) -> None:
            inside.set()
            release.wait(10)

        def revisit(self, everything: bool) -> set[tuple[str, str]]:
            return set()

    reconciler.add_kind("CompressionSearch", Hanging())
    stop = threading.Event()
    worker = threading.Thread(target=reconciler.work_forever, args=(stop,), daemon=True)
    worker.start()
    try:
        reconciler.enqueue("ns", "s", kind="CompressionSearch")
        assert inside.wait(5), "the worker never took the search"
        seconds, what = reconciler.longest_reconcile()
        assert what == "CompressionSearch ns/s" and seconds > 0
    finally:
        release.set()
        stop.set()
        worker.join(5)
    assert reconciler.longest_reconcile() == (0.0, "")
