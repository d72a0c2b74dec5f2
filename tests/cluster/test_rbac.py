"""RBAC is enforced: a ServiceAccount can do only what a Role grants it."""

from __future__ import annotations

import time

import pytest
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
