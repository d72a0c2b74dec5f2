"""Pods land on the right node pool and run as real processes on the test nodes."""

from __future__ import annotations

import json

import pytest
from fixtures.cluster import wait_for
from kubernetes import client

pytestmark = pytest.mark.cluster

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
WRITE_RESULT = (
    "import json, sys; "
    "open('/dev/termination-log', 'w').write(json.dumps({'python': sys.executable}))"
)


def job_complete(job) -> bool:
    return any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])


def test_gpu_job_lands_on_gpu_node_and_reports_termination_message(cluster, namespace):
    batch = client.BatchV1Api(cluster.api_client)
    core = client.CoreV1Api(cluster.api_client)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "fp16"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kondense.dev/pool": "gpu"},
                    "tolerations": [GPU_TOLERATION],
                    "containers": [
                        {
                            "name": "runner",
                            "image": "ghcr.io/kondense/runner:dev",
                            "command": ["python", "-c", WRITE_RESULT],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                }
            },
        },
    }
    batch.create_namespaced_job(namespace, job)
    wait_for(batch.list_namespaced_job, job_complete, timeout=60, namespace=namespace)

    (pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=fp16").items
    assert pod.spec.node_name == "gpu-0"
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    message = json.loads(terminated.message)
    assert message["python"] == str(cluster.repo / ".venv" / "bin" / "python")


def test_pod_without_gpu_toleration_never_lands_on_gpu_node(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "no-toleration"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kondense.dev/pool": "gpu"},
            "containers": [{"name": "c", "image": "x", "command": ["true"]}],
        },
    }
    core.create_namespaced_pod(namespace, pod)

    def unschedulable(p) -> bool:
        return any(
            c.type == "PodScheduled" and c.reason == "Unschedulable"
            for c in p.status.conditions or []
        )

    pending = wait_for(core.list_namespaced_pod, unschedulable, timeout=30, namespace=namespace)
    assert pending.spec.node_name is None
    (condition,) = [c for c in pending.status.conditions if c.type == "PodScheduled"]
    assert "1 node(s) had untolerated taint" in condition.message


def test_unconstrained_pods_run_on_cpu_nodes_only(cluster, namespace):
    batch = client.BatchV1Api(cluster.api_client)
    core = client.CoreV1Api(cluster.api_client)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "spread"},
        "spec": {
            "completions": 4,
            "parallelism": 4,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "x", "command": ["true"]}],
                }
            },
        },
    }
    batch.create_namespaced_job(namespace, job)
    wait_for(batch.list_namespaced_job, job_complete, timeout=60, namespace=namespace)
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=spread").items
    assert {p.spec.node_name for p in pods} <= {"cpu-0", "cpu-1"}
