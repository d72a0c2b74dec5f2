"""Kueue admits runner Jobs: the real Kueue manager (tests/fixtures/kueue.py) on the local
cluster, with a ClusterQueue that has room for one runner pod. The first CompressionJob is
admitted and runs; the second waits, Pending with reason Queued and Kueue's own words, until
the first has finished; then it runs too.

The first job comes from the "queued" pool (its queueName), the second names the LocalQueue in
spec.queueName on the plain cpu pool: both ways a job gets queued. The first is held (the
"queued" pool's command waits for a release marker in S3), so the second is sure to find the
quota in use.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.cluster import Cluster
from fixtures.kueue import GROUP as KUEUE_GROUP
from fixtures.kueue import VERSION as KUEUE_VERSION
from fixtures.kueue import Kueue
from fixtures.models import build_tiny_onnx
from fixtures.operator_cluster import (
    FLAKY_BUCKET,
    GROUP,
    KUEUE_QUEUE,
    PLURAL,
    RUNNER_RESOURCES,
    VERSION,
    Operator,
    compression_job,
    phase_is,
    wait_cj,
)

pytestmark = pytest.mark.cluster

TINY_INPUTS = [{"name": "x", "shape": [1, 16]}]
QUICK_EVALUATION = {"requireSpeedup": False, "maxMetricDrop": 1.0, "warmup": 2, "runs": 20}
RUN_S = 300  # admission -> a tiny recipe's terminal status, runner pod start included
# Kueue's reason reaches the status at the latest with the operator's resync of every job in
# flight (60 s), after Kueue first found no quota for it.
QUEUED_S = 120


def recipe(model: str, out: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": {"uri": model, "format": "onnx", "inputs": TINY_INPUTS},
        "steps": [{"quantize": {"mode": "dynamic"}}],
        "evaluation": QUICK_EVALUATION,
        "output": {"uri": out},
        **extra,
    }


def workload_of(cluster: Cluster, namespace: str, job_uid: str) -> dict[str, Any] | None:
    from kubernetes import client

    listing = client.CustomObjectsApi(cluster.api_client).list_namespaced_custom_object(
        KUEUE_GROUP,
        KUEUE_VERSION,
        namespace,
        "workloads",
        label_selector=f"kueue.x-k8s.io/job-uid={job_uid}",
    )
    items: list[dict[str, Any]] = listing["items"]
    return items[0] if items else None


def condition(body: dict[str, Any], kind: str) -> str | None:
    for found in (body.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return str(found.get("status"))
    return None


@pytest.fixture
def queues(cluster: Cluster, kueue: Kueue, kop_namespace: str) -> Iterator[None]:
    """A ResourceFlavor, a ClusterQueue (only this namespace) whose cpu quota is one runner
    pod's request, and the LocalQueue KUEUE_QUEUE pointing at it; Kueue manages the namespace.
    All gone again, with the namespace's Workloads, before Kueue stops (their finalizers would
    hold the namespace otherwise)."""
    kueue.manage(kop_namespace)
    name = f"kondense-{kop_namespace}"[:63]
    quota = [
        {"name": "cpu", "nominalQuota": RUNNER_RESOURCES["requests"]["cpu"]},
        {"name": "memory", "nominalQuota": "1Gi"},
    ]
    try:
        kueue.create("resourceflavors", {"metadata": {"name": name}})
        kueue.create(
            "clusterqueues",
            {
                "metadata": {"name": name},
                "spec": {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": kop_namespace}
                    },
                    "resourceGroups": [
                        {
                            "coveredResources": ["cpu", "memory"],
                            "flavors": [{"name": name, "resources": quota}],
                        }
                    ],
                },
            },
        )
        kueue.create(
            "localqueues",
            {"metadata": {"name": KUEUE_QUEUE}, "spec": {"clusterQueue": name}},
            namespace=kop_namespace,
        )
        cluster.kubectl_run(
            "wait", "--for=condition=Active", "--timeout=60s",
            f"clusterqueues.{KUEUE_GROUP}/{name}",
        )  # fmt: skip
        yield
    finally:
        kueue.clean_up(kop_namespace, name)


def test_a_clusterqueue_with_room_for_one_runner_holds_the_second_job_until_the_first_is_done(
    cluster: Cluster,
    operator: Operator,
    kueue: Kueue,
    kop_namespace: str,
    bucket: str,
    queues: None,
    tmp_path: Path,
) -> None:
    from kubernetes import client

    model = cluster.put_s3(build_tiny_onnx(tmp_path / "tiny.onnx"), bucket, "models/tiny.onnx")
    batch = client.BatchV1Api(cluster.api_client)
    custom = client.CustomObjectsApi(cluster.api_client)

    first = compression_job("first", **recipe(model, f"s3://{bucket}/first", nodePool="queued"))
    custom.create_namespaced_custom_object(GROUP, VERSION, kop_namespace, PLURAL, first)
    running = wait_cj(
        cluster,
        kop_namespace,
        "first",
        lambda b: (b.get("status") or {}).get("reason") == "RunnerRunning",
        timeout=RUN_S,
    )
    first_job = batch.read_namespaced_job(running["status"]["runner"]["job"], kop_namespace)
    assert first_job.metadata.labels["kueue.x-k8s.io/queue-name"] == KUEUE_QUEUE
    admitted = workload_of(cluster, kop_namespace, first_job.metadata.uid)
    assert admitted is not None and condition(admitted, "Admitted") == "True", admitted

    second = compression_job("second", **recipe(model, f"s3://{bucket}/second"))
    second["spec"]["queueName"] = KUEUE_QUEUE
    custom.create_namespaced_custom_object(GROUP, VERSION, kop_namespace, PLURAL, second)
    waiting = wait_cj(
        cluster,
        kop_namespace,
        "second",
        lambda b: "insufficient unused quota" in (b.get("status") or {}).get("message", ""),
        timeout=QUEUED_S,
    )
    status = waiting["status"]
    assert (status["phase"], status["reason"]) == ("Pending", "Queued")
    # The wait in words: the queue, then Kueue's reason, e.g. "couldn't assign flavors to pod
    # set main: insufficient unused quota for cpu in flavor ..., 100m more needed".
    assert status["message"].startswith(f"waiting in Kueue queue {KUEUE_QUEUE}: "), status
    assert "cpu" in status["message"]
    second_job = batch.read_namespaced_job(status["runner"]["job"], kop_namespace)
    assert second_job.spec.suspend is True
    assert status["runner"]["attempts"] == 0  # no pod while it waits

    cluster.s3().put_object(Bucket=FLAKY_BUCKET, Key=f"release/{kop_namespace}/first", Body=b"go")
    done_first = wait_cj(cluster, kop_namespace, "first", phase_is("Succeeded", "Failed"), RUN_S)
    assert done_first["status"]["phase"] == "Succeeded", done_first["status"]
    done_second = wait_cj(cluster, kop_namespace, "second", phase_is("Succeeded", "Failed"), RUN_S)
    assert done_second["status"]["phase"] == "Succeeded", done_second["status"]
    # Kueue started the second runner only once the first had given its quota back.
    assert done_second["status"]["startTime"] >= done_first["status"]["completionTime"]
