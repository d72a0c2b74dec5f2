"""Leader election on a real apiserver Lease: one holder at a time, taken over once the
holder stops renewing for the lease's duration."""

from __future__ import annotations

import threading
import time

import pytest
from fixtures.cluster import Cluster

from kondense.operator.leader import LeaderElection

pytestmark = pytest.mark.cluster


def test_one_replica_leads_and_another_takes_over_once_it_stops_renewing(
    cluster: Cluster, namespace: str
) -> None:
    a = LeaderElection(cluster.api_client, namespace, "replica-a", lease_seconds=2)
    b = LeaderElection(cluster.api_client, namespace, "replica-b", lease_seconds=2)
    assert a.try_lead()
    assert not b.try_lead()
    started = time.monotonic()
    while time.monotonic() - started < 3:  # a keeps renewing: b never gets it
        assert a.try_lead()
        stopped = time.monotonic()  # a's last renewal: then it stops (killed)
        assert not b.try_lead()
        time.sleep(0.5)
    assert b.wait_until_leader(threading.Event(), retry=0.2)
    took = time.monotonic() - stopped
    assert 2 <= took < 5, took
    assert not a.try_lead()  # b's lease is fresh: a, back, stands by


def test_of_two_replicas_racing_for_a_free_lease_one_wins(cluster: Cluster, namespace: str) -> None:
    replicas = [LeaderElection(cluster.api_client, namespace, f"r{i}") for i in range(4)]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda r=r: results.append(r.try_lead())) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
