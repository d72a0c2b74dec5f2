"""Deleting a Job deletes its pods (garbage collector) and the node agent stops the process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fixtures.cluster import wait_for
from kubernetes import client, watch

pytestmark = pytest.mark.cluster

MOUNT = "/kondense-test-gc"  # absent on the host: the agent must create and remove it
WORKER = f"""
import pathlib, signal, sys, time
out = pathlib.Path("{MOUNT}")
def stop(*_):
    (out / "terminated").write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
(out / "started").write_text("yes")
while True:
    time.sleep(1)
"""


def test_deleting_job_deletes_pod_and_stops_its_process(cluster, namespace, tmp_path):
    batch = client.BatchV1Api(cluster.api_client)
    core = client.CoreV1Api(cluster.api_client)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "long"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 20,
                    "volumes": [{"name": "out", "hostPath": {"path": str(tmp_path)}}],
                    "containers": [
                        {
                            "name": "worker",
                            "image": "x",
                            "command": ["python", "-c", WORKER],
                            "volumeMounts": [{"name": "out", "mountPath": MOUNT}],
                        }
                    ],
                }
            }
        },
    }
    batch.create_namespaced_job(namespace, job)
    pod = wait_for(
        core.list_namespaced_pod,
        lambda p: p.status.phase == "Running",
        timeout=60,
        namespace=namespace,
    )
    pid = int(pod.status.container_statuses[0].container_id.removeprefix("local://"))
    deadline = time.monotonic() + 20  # a file has no watch: poll it briefly
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline, "the pod process did not start"
        time.sleep(0.05)
    # Only the process's own mount namespace sees the volume; the host has an empty placeholder.
    assert list(Path(MOUNT).iterdir()) == []

    batch.delete_namespaced_job("long", namespace, propagation_policy="Background")
    w = watch.Watch()
    gone = False
    for event in w.stream(
        core.list_namespaced_pod,
        namespace=namespace,
        resource_version=pod.metadata.resource_version,
        timeout_seconds=60,
    ):
        if event["type"] == "DELETED" and event["object"].metadata.name == pod.metadata.name:
            gone = True
            w.stop()
    assert gone, "the garbage collector did not delete the Job's pod"
    assert (tmp_path / "terminated").read_text() == "SIGTERM"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not Path(MOUNT).exists()  # the agent removed its placeholder mount point
