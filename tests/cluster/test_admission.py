"""The apiserver's own admission: CRD schema with CEL rules, and Pod Security."""

from __future__ import annotations

import json
import uuid

import pytest
from fixtures.cluster import wait_for
from fixtures.pods import RESTRICTED_CONTAINER, RESTRICTED_POD, is_ready, named, pod
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster

CEL_MESSAGE = "minReplicas must not exceed maxReplicas"


@pytest.fixture
def widget_crd(cluster):
    """A throw-away CRD whose spec carries one CEL rule; yields (group, plural)."""
    group = f"t{uuid.uuid4().hex[:8]}.kondense.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "minReplicas": {"type": "integer"},
                                        "maxReplicas": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.minReplicas <= self.maxReplicas",
                                            "message": CEL_MESSAGE,
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.kubectl_run("apply", "-f", "-", input=json.dumps(crd))
    cluster.kubectl_run("wait", "--for=condition=Established", f"crd/widgets.{group}")
    yield group, "widgets"
    cluster.kubectl_run("delete", f"crd/widgets.{group}", "--wait=false")


def test_cel_rule_refuses_bad_object_with_its_message(cluster, namespace, widget_crd):
    group, plural = widget_crd
    custom = client.CustomObjectsApi(cluster.api_client)

    def widget(name: str, lo: int, hi: int) -> dict:
        return {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"minReplicas": lo, "maxReplicas": hi},
        }

    custom.create_namespaced_custom_object(group, "v1", namespace, plural, widget("good", 1, 3))
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(group, "v1", namespace, plural, widget("bad", 5, 2))
    assert refused.value.status == 422
    assert CEL_MESSAGE in refused.value.body


def restricted_pod(name: str, image: str) -> dict:
    container = {"name": "c", "image": image, "securityContext": RESTRICTED_CONTAINER}
    return pod(
        name, [container], securityContext=RESTRICTED_POD, automountServiceAccountToken=False
    )


def test_restricted_namespace_refuses_privileged_pod_and_admits_compliant_one(
    cluster, restricted_namespace
):
    namespace = restricted_namespace
    core = client.CoreV1Api(cluster.api_client)
    labels = core.read_namespace(namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    pause = cluster.image("pause")
    privileged = restricted_pod("privileged", pause)
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, privileged)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert 'privileged (container "c" must not set securityContext.privileged=true)' in message

    # Admitted, and the node starts it under that context (test_security.py looks inside).
    core.create_namespaced_pod(namespace, restricted_pod("compliant", pause))
    wait_for(
        core.list_namespaced_pod, named("compliant", is_ready), timeout=60, namespace=namespace
    )
