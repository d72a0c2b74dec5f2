"""In a pod, the operator reaches the apiserver named by KUBERNETES_SERVICE_HOST/PORT (as
client-go does), not kopf's hard-coded https://kubernetes.default.svc, which needs cluster DNS."""

from __future__ import annotations

from kondense.operator.main import in_cluster_server


def test_in_cluster_server_comes_from_the_service_environment() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_server(env) == "https://10.96.0.1:443"


def test_in_cluster_server_brackets_an_ipv6_host() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    assert in_cluster_server(env) == "https://[fd00::1]:6443"


def test_no_service_environment_keeps_kopf_default() -> None:
    assert in_cluster_server({}) is None
