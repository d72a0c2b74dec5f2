"""The kubelet runs probes: a failing readiness probe keeps a pod out of Ready, until what it
checks holds (made so through `kubectl exec`); a failing liveness probe restarts the container."""

from __future__ import annotations

import pytest
from fixtures.cluster import wait_for
from fixtures.pods import event_about, is_ready, named, pod
from kubernetes import client

pytestmark = pytest.mark.cluster


def sleeper(image: str, **probes: object) -> dict:
    return {"name": "main", "image": image, "command": ["sleep", "3600"], **probes}


def check_file(path: str) -> dict:
    return {"exec": {"command": ["cat", path]}, "periodSeconds": 1, "failureThreshold": 1}


def test_failing_readiness_probe_keeps_pod_unready_until_it_passes(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    container = sleeper(cluster.image("operator"), readinessProbe=check_file("/tmp/ready"))
    manifest = pod("gate", [container], restartPolicy="Always", terminationGracePeriodSeconds=1)
    core.create_namespaced_pod(namespace, manifest)

    wait_for(
        core.list_namespaced_event,
        event_about("gate", "Unhealthy", "Readiness probe failed"),
        timeout=90,
        namespace=namespace,
    )
    gate = core.read_namespaced_pod("gate", namespace)
    assert gate.status.phase == "Running"
    assert not is_ready(gate)
    assert gate.status.container_statuses[0].ready is False
    assert gate.status.container_statuses[0].restart_count == 0  # readiness never restarts

    cluster.kubectl_run("exec", "-n", namespace, "gate", "--", "touch", "/tmp/ready")
    wait_for(core.list_namespaced_pod, named("gate", is_ready), timeout=30, namespace=namespace)


def test_failing_liveness_probe_restarts_the_container(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    container = sleeper(cluster.image("operator"), livenessProbe=check_file("/tmp/alive"))
    manifest = pod("doomed", [container], restartPolicy="Always", terminationGracePeriodSeconds=1)
    core.create_namespaced_pod(namespace, manifest)

    def restarted(p) -> bool:
        statuses = p.status.container_statuses or []
        return bool(statuses) and statuses[0].restart_count >= 1

    doomed = wait_for(
        core.list_namespaced_pod, named("doomed", restarted), timeout=90, namespace=namespace
    )
    assert doomed.status.container_statuses[0].last_state.terminated is not None
    for reason, text in (("Unhealthy", "Liveness probe failed"), ("Killing", "failed liveness")):
        wait_for(
            core.list_namespaced_event,
            event_about("doomed", reason, text),
            timeout=10,
            namespace=namespace,
        )
