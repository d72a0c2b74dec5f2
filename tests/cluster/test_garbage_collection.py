"""Deleting a Job deletes its pods (garbage collector), and the node stops their containers
with SIGTERM first."""

from __future__ import annotations

import pytest
from fixtures.cluster import wait_for
from fixtures.pods import is_ready, pod, python
from kubernetes import client, watch

pytestmark = pytest.mark.cluster

# Writes to a PersistentVolume (a host directory) when it starts and when it is told to stop.
WORKER = """
import pathlib, signal, sys, time
out = pathlib.Path("/out")
def stop(*_):
    (out / "terminated").write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
(out / "started").write_text("yes")
while True:
    time.sleep(1)
"""


def test_deleting_job_deletes_pod_and_stops_its_container(cluster, namespace):
    batch = client.BatchV1Api(cluster.api_client)
    core = client.CoreV1Api(cluster.api_client)
    out = cluster.make_volume(namespace, "out")
    worker = python(
        cluster.image("operator"),
        WORKER,
        name="worker",
        volumeMounts=[{"name": "out", "mountPath": "/out"}],
        readinessProbe={"exec": {"command": ["cat", "/out/started"]}, "periodSeconds": 1},
    )
    template = pod(
        "unused",
        [worker],
        terminationGracePeriodSeconds=20,
        volumes=[{"name": "out", "persistentVolumeClaim": {"claimName": "out"}}],
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "long"},
        "spec": {"template": {"spec": template["spec"]}},
    }
    batch.create_namespaced_job(namespace, job)
    running = wait_for(core.list_namespaced_pod, is_ready, timeout=90, namespace=namespace)
    assert (out / "started").read_text() == "yes"

    batch.delete_namespaced_job("long", namespace, propagation_policy="Background")
    w = watch.Watch()
    gone = False
    for event in w.stream(
        core.list_namespaced_pod,
        namespace=namespace,
        resource_version=running.metadata.resource_version,
        timeout_seconds=60,
    ):
        if event["type"] == "DELETED" and event["object"].metadata.name == running.metadata.name:
            gone = True
            w.stop()
    assert gone, "the garbage collector did not delete the Job's pod"
    # The kubelet let the container stop gracefully before the pod object went.
    assert (out / "terminated").read_text() == "SIGTERM"
