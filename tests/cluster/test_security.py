"""The restricted securityContext runner pods are admitted with is applied by the node's runtime:
the user, the read-only root, seccomp, no capabilities, no privilege escalation; the container's
output reaches `kubectl logs` and its termination message the pod status."""

from __future__ import annotations

import json

import pytest
from fixtures.cluster import pod_finished, wait_for
from fixtures.pods import RESTRICTED_CONTAINER, RESTRICTED_POD, named, pod, python
from kubernetes import client

pytestmark = pytest.mark.cluster

INSPECT = r"""
import errno, json, os, socket, subprocess
seen = {"uid": subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip()}
for path in ("/probe", "/tmp/probe"):
    try:
        open(path, "w").close()
        seen[path] = "written"
    except OSError as exc:
        seen[path] = errno.errorcode[exc.errno]
status = dict(
    line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line
)
for key in ("Seccomp", "NoNewPrivs", "CapEff"):
    seen[key] = status[key].strip()
seen["pid"] = os.getpid()
seen["hostname"] = socket.gethostname()
print("inspected as uid", seen["uid"], flush=True)
open("/dev/termination-log", "w").write(json.dumps(seen))
"""


def test_restricted_pod_runs_non_root_read_only_under_seccomp(cluster, restricted_namespace):
    namespace = restricted_namespace
    core = client.CoreV1Api(cluster.api_client)
    container = python(cluster.image("operator"), INSPECT, securityContext=RESTRICTED_CONTAINER)
    manifest = pod(
        "restricted",
        [container],
        securityContext=RESTRICTED_POD,
        automountServiceAccountToken=False,
    )
    core.create_namespaced_pod(namespace, manifest)
    done = wait_for(
        core.list_namespaced_pod, named("restricted", pod_finished), timeout=90, namespace=namespace
    )
    log = cluster.kubectl_run("logs", "-n", namespace, "restricted").stdout
    assert done.status.phase == "Succeeded", log
    seen = json.loads(done.status.container_statuses[0].state.terminated.message)

    assert seen["uid"] == "65532", seen
    # EROFS, not EACCES: the root is read-only even where the user could write (/tmp).
    assert seen["/probe"] == "EROFS", seen
    assert seen["/tmp/probe"] == "EROFS", seen
    assert seen["Seccomp"] == "2", seen  # SECCOMP_MODE_FILTER: the RuntimeDefault profile
    assert seen["NoNewPrivs"] == "1", seen  # allowPrivilegeEscalation: false
    assert int(seen["CapEff"], 16) == 0, seen  # capabilities: drop ALL
    assert seen["pid"] == 1, seen  # its own PID namespace
    assert seen["hostname"] == "restricted", seen  # and UTS namespace
    assert log == "inspected as uid 65532\n"
