"""RBAC is enforced: a ServiceAccount can do only what a Role grants it, from outside the
cluster and from its pods; the Node authorizer confines each kubelet."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fixtures.cluster import pod_finished, wait_for
from fixtures.pods import named, pod, python
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster


def list_when_allowed(api: client.CoreV1Api, namespace: str, timeout: float = 10):
    """The authorizer learns of a new RoleBinding through its informer, a moment later;
    nothing a client can watch says when, so retry briefly."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return api.list_namespaced_pod(namespace)
        except ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_service_account_needs_a_role_to_list_pods(cluster, namespace, tmp_path):
    core = client.CoreV1Api(cluster.api_client)
    rbac = client.RbacAuthorizationV1Api(cluster.api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    as_reader = client.CoreV1Api(cluster.user_client(token))

    with pytest.raises(ApiException) as denied:
        as_reader.list_namespaced_pod(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in denied.value.body

    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader-reads-pods"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    assert list_when_allowed(as_reader, namespace).items == []
    kubeconfig = cluster.service_account_kubeconfig(namespace, "reader", tmp_path / "reader")
    can_i = cluster.kubectl_run("--kubeconfig", str(kubeconfig), "auth", "can-i", "list", "pods")
    assert can_i.stdout.strip() == "yes"
    with pytest.raises(ApiException) as still_denied:  # the Role grants pods, not secrets
        as_reader.list_namespaced_secret(namespace)
    assert still_denied.value.status == 403


# Runs as the pod's ServiceAccount with the token the kubelet mounted; retries the first call
# while the new RoleBinding reaches the authorizer.
IN_POD = """
import json, time
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
config.load_incluster_config()
core = client.CoreV1Api()
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
deadline = time.monotonic() + 10
while True:
    try:
        pods = [p.metadata.name for p in core.list_namespaced_pod(ns).items]
        break
    except ApiException as exc:
        if exc.status != 403 or time.monotonic() > deadline:
            raise
        time.sleep(0.2)
try:
    core.list_namespaced_secret(ns)
    secrets = "allowed"
except ApiException as exc:
    secrets = exc.status
open("/dev/termination-log", "w").write(json.dumps({"pods": pods, "secrets": secrets}))
"""


def test_pod_calls_the_api_as_its_service_account_under_its_role(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    rbac = client.RbacAuthorizationV1Api(cluster.api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "lister"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-lister"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "lister-lists-pods"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-lister",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": namespace}],
        },
    )
    main = python(cluster.image("operator"), IN_POD)
    core.create_namespaced_pod(namespace, pod("as-lister", [main], serviceAccountName="lister"))
    done = wait_for(
        core.list_namespaced_pod, named("as-lister", pod_finished), timeout=90, namespace=namespace
    )
    assert done.status.phase == "Succeeded", cluster.pod_log(namespace, "as-lister", "main")
    seen = json.loads(done.status.container_statuses[0].state.terminated.message)
    assert seen == {"pods": ["as-lister"], "secrets": 403}


def node_client(cluster, node: str) -> Any:
    """An ApiClient with the kubelet's own client certificate (system:node:<node>)."""
    pki = cluster.repo / ".cluster" / "pki"
    config = client.Configuration()
    admin = cluster.api_client.configuration
    config.host = admin.host
    config.ssl_ca_cert = admin.ssl_ca_cert
    config.cert_file = str(pki / f"kubelet-{node}.crt")
    config.key_file = str(pki / f"kubelet-{node}.key")
    return client.ApiClient(config)


def test_node_authorizer_confines_each_kubelet_to_its_pods_secrets(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}}
    )
    with node_client(cluster, "cpu-0") as api_client:
        as_node = client.CoreV1Api(api_client)
        assert as_node.read_node("cpu-0").metadata.name == "cpu-0"
        # No pod on cpu-0 uses the secret: the Node authorizer refuses it.
        with pytest.raises(ApiException) as secret:
            as_node.read_namespaced_secret("unrelated", namespace)
    assert secret.value.status == 403
    message = json.loads(secret.value.body)["message"]
    assert "no relationship found between node 'cpu-0'" in message


def test_node_restriction_lets_a_kubelet_change_only_its_own_node(cluster):
    with node_client(cluster, "cpu-0") as api_client:
        as_node = client.CoreV1Api(api_client)
        # The patch changes nothing, should it pass: other tests share gpu-0.
        with pytest.raises(ApiException) as other:
            as_node.patch_node("gpu-0", {"metadata": {"labels": {"kondense.dev/pool": "gpu"}}})
    assert other.value.status == 403
    message = json.loads(other.value.body)["message"]
    assert 'node "cpu-0" is not allowed to modify node "gpu-0"' in message
