"""Resource limits are enforced by the node: the memory limit is the container's cgroup limit,
and a container that goes over it is OOM-killed and reported so."""

from __future__ import annotations

import pytest
from fixtures.cluster import pod_finished, wait_for
from fixtures.pods import named, pod, python
from kubernetes import client

pytestmark = pytest.mark.cluster

LIMIT = 64 * 2**20

# Prints its cgroup's memory limit (v2, or v1 as on hosts in hybrid mode), then touches memory
# (bytes * n writes every page, unlike bytearray(n)) until the kernel kills it.
HOG = """
import pathlib
for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    if pathlib.Path(f).exists():
        print("limit", pathlib.Path(f).read_text().strip(), flush=True)
        break
held = []
for _ in range(64):
    held.append(b"x" * (16 << 20))
print("survived", flush=True)
"""


def test_container_over_its_memory_limit_is_oom_killed(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    hog = python(
        cluster.image("operator"),
        HOG,
        resources={"limits": {"memory": "64Mi", "cpu": "500m"}},
    )
    core.create_namespaced_pod(namespace, pod("hog", [hog]))
    done = wait_for(
        core.list_namespaced_pod, named("hog", pod_finished), timeout=90, namespace=namespace
    )
    log = cluster.pod_log(namespace, "hog", "main")
    terminated = done.status.container_statuses[0].state.terminated
    assert done.status.phase == "Failed", (terminated, log)
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137), (terminated, log)
    assert log.splitlines()[0] == f"limit {LIMIT}", log
    assert "survived" not in log
