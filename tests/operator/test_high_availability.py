"""Two operator replicas with --leader-election: exactly one is active; when it is killed
(SIGKILL: no goodbye), the standby takes over within 30 s and runs the jobs applied since.

Both run as the session's least-privilege ServiceAccount, plus the Role for the Lease that
the chart adds when it runs more than one replica, and watch a namespace of their own (the
session's operator does not watch it)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.cluster import Cluster, free_port, wait_default_service_account
from fixtures.models import build_tiny_onnx
from fixtures.operator_cluster import History, Operator, compression_job, phase_is, wait_cj

pytestmark = pytest.mark.cluster

TAKEOVER_LIMIT_S = 30


@pytest.fixture
def ha_namespace(cluster: Cluster, operator: Operator) -> Iterator[str]:
    from kubernetes import client

    core = client.CoreV1Api(cluster.api_client)
    rbac = client.RbacAuthorizationV1Api(cluster.api_client)
    name = f"kop-ha-{uuid.uuid4().hex[:6]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    wait_default_service_account(cluster, name)
    # The Lease lives in this namespace: the chart's leader-election Role, bound to the SA.
    role = yaml.safe_load(
        (Path(__file__).parents[2] / "operator" / "leader-election-role.yaml").read_text()
    )
    role["metadata"] = {"name": "kondense-leader-election", "namespace": name}
    rbac.create_namespaced_role(name, role)
    rbac.create_namespaced_role_binding(
        name,
        {
            "metadata": {"name": "kondense-leader-election"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "kondense-leader-election"},
            "subjects": [{"kind": "ServiceAccount", "name": "operator",
                          "namespace": operator.system_namespace}],
        },
    )  # fmt: skip
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def replica(operator: Operator, namespace: str, name: str) -> Operator:
    return dataclasses.replace(
        operator,
        name=name,
        namespaces=[namespace],
        unused_namespaces=[],
        metrics_port=free_port(),
        health_port=free_port(),
        process=None,
        starts=0,
        extra_args=[
            "--leader-election",
            f"--leader-election-namespace={namespace}",
            f"--leader-election-id={name}",
        ],
    )


def holder(cluster: Cluster, namespace: str) -> str | None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        lease = client.CoordinationV1Api(cluster.api_client).read_namespaced_lease(
            "kondense-operator", namespace
        )
    except ApiException:
        return None
    return str(lease.spec.holder_identity)


def wait_holder(cluster: Cluster, namespace: str, name: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if holder(cluster, namespace) == name:
            return time.monotonic() - started
        time.sleep(0.25)  # polling the Lease, which has no condition to watch
    raise AssertionError(f"{name} never held the Lease; it is {holder(cluster, namespace)}")


def quick_job(model: str, name: str) -> dict[str, Any]:
    bucket = model.removeprefix("s3://").split("/", 1)[0]
    return compression_job(
        name,
        model={"uri": model, "format": "onnx", "inputs": [{"name": "x", "shape": [1, 16]}]},
        steps=[{"export": {}}],
        # No gates: an export's speed on a loaded test machine is not what this test is about.
        evaluation={"requireSpeedup": False, "maxMetricDrop": 1.0, "warmup": 2, "runs": 20},
        output={"uri": f"s3://{bucket}/out-{name}"},
        nodePool="cpu",
    )


def test_the_standby_takes_over_within_30_s_when_the_active_replica_is_killed(
    cluster: Cluster, operator: Operator, ha_namespace: str, history: History, tmp_path: Path
) -> None:
    from kubernetes import client

    model = cluster.put_s3(build_tiny_onnx(tmp_path / "tiny.onnx"), ha_namespace, "tiny.onnx")

    custom = client.CustomObjectsApi(cluster.api_client)

    def apply(body: dict[str, Any]) -> None:
        custom.create_namespaced_custom_object(
            "kondense.dev", "v1alpha1", ha_namespace, "compressionjobs", body
        )

    first, second = (
        replica(operator, ha_namespace, "replica-a"),
        replica(operator, ha_namespace, "replica-b"),
    )
    first.start()
    try:
        wait_holder(cluster, ha_namespace, "replica-a", 30)
        second.start()  # answers its health probe as a standby
        apply(quick_job(model, "before"))
        body = wait_cj(cluster, ha_namespace, "before", phase_is("Succeeded", "Failed"), 300)
        assert body["status"]["phase"] == "Succeeded", body["status"]
        assert holder(cluster, ha_namespace) == "replica-a"
        assert "standing by" in second.log() and "holds the Lease" not in second.log()

        first.kill()
        killed = time.monotonic()
        apply(quick_job(model, "after"))
        took = wait_holder(cluster, ha_namespace, "replica-b", TAKEOVER_LIMIT_S)
        wait_cj(cluster, ha_namespace, "after", lambda b: bool(b.get("status")), 30)
        reconciled = time.monotonic() - killed
        print(f"takeover: Lease after {took:.1f} s, first status after {reconciled:.1f} s")
        assert reconciled < TAKEOVER_LIMIT_S, second.log()
        body = wait_cj(cluster, ha_namespace, "after", phase_is("Succeeded", "Failed"), 300)
        assert body["status"]["phase"] == "Succeeded", body["status"]
    finally:
        first.kill()
        second.kill()
    history.check(cluster, ha_namespace)
