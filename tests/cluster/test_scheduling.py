"""Pods land on the right node pool: the GPU node takes only pods that tolerate its taint."""

from __future__ import annotations

import json

import pytest
from fixtures.cluster import wait_for
from fixtures.pods import GPU_TOLERATION, unschedulable
from kubernetes import client

pytestmark = pytest.mark.cluster

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
                            "image": cluster.image("operator"),
                            "command": ["python3", "-c", WRITE_RESULT],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                }
            },
        },
    }
    batch.create_namespaced_job(namespace, job)
    # The one GPU may be held by another test's pod for a while.
    wait_for(batch.list_namespaced_job, job_complete, timeout=180, namespace=namespace)

    (pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=fp16").items
    assert pod.spec.node_name == "gpu-0"
    wide = cluster.kubectl_run("get", "pods", "-n", namespace, "-o", "wide", "--no-headers")
    assert wide.stdout.split()[6] == "gpu-0", wide.stdout  # the NODE column
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    message = json.loads(terminated.message)
    assert message["python"] == "/opt/kondense/bin/python3"  # the image's, not this machine's


def test_pod_without_gpu_toleration_never_lands_on_gpu_node(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "no-toleration"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kondense.dev/pool": "gpu"},
            "containers": [{"name": "c", "image": cluster.image("pause")}],
        },
    }
    core.create_namespaced_pod(namespace, pod)

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
                    "containers": [
                        {"name": "c", "image": cluster.image("operator"), "command": ["true"]}
                    ],
                }
            },
        },
    }
    batch.create_namespaced_job(namespace, job)
    wait_for(batch.list_namespaced_job, job_complete, timeout=120, namespace=namespace)
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=spread").items
    assert {p.spec.node_name for p in pods} <= {"cpu-0", "cpu-1"}
