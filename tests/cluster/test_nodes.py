"""The nodes are real kubelets on containerd, and gpu-0 is a GPU node as the scheduler sees it."""

from __future__ import annotations

import pytest
from fixtures.cluster import wait_for
from fixtures.pods import GPU_TOLERATION, pod, unschedulable
from kubernetes import client

pytestmark = pytest.mark.cluster

NODES = {"gpu-0", "cpu-0", "cpu-1"}


def test_every_node_is_a_kubelet_on_containerd(cluster):
    wide = cluster.kubectl_run("get", "nodes", "-o", "wide", "--no-headers").stdout
    rows = {line.split()[0]: line.split() for line in wide.splitlines()}
    assert set(rows) == NODES, wide
    for name, row in rows.items():
        status, runtime = row[1], row[-1]
        assert status == "Ready", wide
        assert runtime.startswith("containerd://"), (name, wide)

    core = client.CoreV1Api(cluster.api_client)
    for node in core.list_node().items:
        info = node.status.node_info
        assert info.kubelet_version.startswith("v1.34."), info
        assert info.container_runtime_version.startswith("containerd://"), info
        # Each node has an address of its own (its network namespace), none on loopback.
        (internal,) = [a.address for a in node.status.addresses if a.type == "InternalIP"]
        assert internal.startswith("10.200.0."), node.status.addresses
    pools = {
        n.metadata.name: n.metadata.labels.get("kondense.dev/pool") for n in core.list_node().items
    }
    assert pools == {"gpu-0": "gpu", "cpu-0": "cpu", "cpu-1": "cpu"}


def test_gpu_node_is_labelled_tainted_and_advertises_one_gpu(cluster):
    node = client.CoreV1Api(cluster.api_client).read_node("gpu-0")
    assert node.metadata.labels["kondense.dev/pool"] == "gpu"
    taints = {(t.key, t.value, t.effect) for t in node.spec.taints or []}
    assert ("nvidia.com/gpu", "present", "NoSchedule") in taints, taints
    assert node.status.capacity["nvidia.com/gpu"] == "1"
    assert node.status.allocatable["nvidia.com/gpu"] == "1"
    assert node.metadata.annotations["kondense.dev/gpu-physically-present"] == "false"
    for other in ("cpu-0", "cpu-1"):
        cpu = client.CoreV1Api(cluster.api_client).read_node(other)
        assert "nvidia.com/gpu" not in cpu.status.capacity
        assert "nvidia.com/gpu" not in {t.key for t in cpu.spec.taints or []}


def test_scheduler_counts_the_advertised_gpu(cluster, namespace):
    """Two GPUs fit nowhere: the capacity the status patch advertised is what is scheduled."""
    core = client.CoreV1Api(cluster.api_client)
    greedy = {
        "name": "c",
        "image": cluster.image("pause"),
        "resources": {"limits": {"nvidia.com/gpu": "2"}},
    }
    core.create_namespaced_pod(namespace, pod("two-gpus", [greedy], tolerations=[GPU_TOLERATION]))

    pending = wait_for(core.list_namespaced_pod, unschedulable, timeout=30, namespace=namespace)
    (condition,) = [c for c in pending.status.conditions if c.type == "PodScheduled"]
    assert "Insufficient nvidia.com/gpu" in condition.message, condition.message
