"""The chart lints strictly and renders what platform teams expect, for every values combination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.helm import CHART, by_kind, helm, render, template_error, values_args

COMBINATIONS = {
    "defaults": [],
    "namespaced-rbac": ["namespaced"],
    "servicemonitor": ["servicemonitor"],
    "custom-pools": ["custom-pools"],
    "all-together": ["namespaced", "servicemonitor", "custom-pools"],
    "locked-down": ["locked-down"],
}


@pytest.mark.parametrize("files", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_chart_lints_strictly(helm_bin: Path, files: list[str]) -> None:
    done = helm(helm_bin, "lint", "--strict", str(CHART), *values_args(*files))
    assert "0 chart(s) failed" in done.stdout


def _operator(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = by_kind(objects, "Deployment")
    return deploy


def test_operator_runs_one_replica_recreated_with_probes(helm_bin: Path) -> None:
    deploy = _operator(render(helm_bin))
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    (container,) = spec["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    assert ports["metrics"] == 8080
    assert container["resources"]["limits"]["memory"]


def test_operator_pod_meets_restricted_pod_security(helm_bin: Path) -> None:
    pod = _operator(render(helm_bin))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    assert "hostNetwork" not in pod and "hostPath" not in str(pod["volumes"])


def operator_cluster_roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's ClusterRoles, not the user-facing ones the built-in roles aggregate."""
    aggregated = "rbac.authorization.k8s.io/aggregate-to-"
    return [
        o
        for o in by_kind(objects, "ClusterRole")
        if not any(k.startswith(aggregated) for k in o["metadata"].get("labels", {}))
    ]


def test_default_rbac_is_cluster_wide_and_operator_watches_all_namespaces(helm_bin: Path) -> None:
    objects = render(helm_bin)
    assert [o["metadata"]["name"] for o in operator_cluster_roles(objects)] == ["kd-kondense"]
    users = [o["metadata"]["name"] for o in by_kind(objects, "ClusterRole")]
    assert sorted(users) == ["kd-kondense", "kd-kondense-edit", "kd-kondense-view"]
    assert not by_kind(objects, "Role")
    (container,) = _operator(objects)["spec"]["template"]["spec"]["containers"]
    assert "--all-namespaces" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--namespace")]


def test_namespaced_rbac_grants_only_watched_namespaces_and_operator_watches_only_them(
    helm_bin: Path,
) -> None:
    objects = render(helm_bin, *values_args("namespaced"))
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    roles = {o["metadata"]["namespace"] for o in by_kind(objects, "Role")}
    bindings = {o["metadata"]["namespace"] for o in by_kind(objects, "RoleBinding")}
    assert roles == bindings == {"team-a", "team-b"}
    (container,) = _operator(objects)["spec"]["template"]["spec"]["containers"]
    assert "--namespace=team-a" in container["args"] and "--namespace=team-b" in container["args"]
    assert "--all-namespaces" not in container["args"]


@pytest.mark.parametrize("files", [[], ["namespaced"]], ids=["cluster", "namespaced"])
def test_rbac_grants_no_secrets_and_no_rbac_changes(helm_bin: Path, files: list[str]) -> None:
    objects = render(helm_bin, *values_args(*files))
    rules = [
        r for o in by_kind(objects, "ClusterRole") + by_kind(objects, "Role") for r in o["rules"]
    ]
    granted = {(g, res) for r in rules for g in r["apiGroups"] for res in r["resources"]}
    assert ("kondense.dev", "compressionjobs/status") in granted
    # A CompressionSearch's children are CompressionJobs it owns (blockOwnerDeletion).
    assert ("kondense.dev", "compressionsearches/status") in granted
    assert ("kondense.dev", "compressionsearches/finalizers") in granted
    assert ("", "events") in granted
    assert ("batch", "jobs") in granted
    assert not [r for r in rules if "secrets" in r["resources"]]
    assert not [r for r in rules if "rbac.authorization.k8s.io" in r["apiGroups"]]
    assert not [r for r in rules if "*" in r["verbs"] or "*" in r["resources"]]


OPERATOR_RBAC = CHART.parents[1] / "operator" / "rbac.yaml"
CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions")}


def _rules(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples: the same grants however the rules are grouped."""
    return {
        (group, resource, verb)
        for r in rules
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }


def test_chart_rbac_is_exactly_the_operators_rbac_yaml(helm_bin: Path) -> None:
    """operator/rbac.yaml is what the cluster tests run the operator under; the chart must grant
    the same, no more: its ClusterRole all of it, each namespaced Role all but the CRD rule (a
    Role cannot grant a cluster-scoped resource, and exact namespaces need no CRD scan)."""
    expected = _rules(yaml.safe_load(OPERATOR_RBAC.read_text())["rules"])
    (cluster_role,) = operator_cluster_roles(render(helm_bin))
    assert _rules(cluster_role["rules"]) == expected
    roles = by_kind(render(helm_bin, *values_args("namespaced")), "Role")
    assert roles and not by_kind(render(helm_bin, *values_args("namespaced")), "ClusterRole")
    namespaced = {t for t in expected if (t[0], t[1]) not in CLUSTER_SCOPED}
    for role in roles:
        assert _rules(role["rules"]) == namespaced, role["metadata"]


def test_device_pools_must_name_a_pool_that_provides_the_device(
    helm_bin: Path, tmp_path: Path
) -> None:
    renamed = {
        "pools": {
            "gpu": None,
            "cpu": None,
            "a100": {"device": "gpu", "nodeSelector": {"pool": "a100"}, "image": "r:gpu"},
            "cpu-small": {"nodeSelector": {"pool": "cpu-small"}, "image": "r:cpu"},
        },
        "devicePools": {"gpu": "a100", "cpu": "cpu-small"},
    }
    objects = render(helm_bin, *values_args(extra=renamed, tmp=tmp_path))
    (config_map,) = by_kind(objects, "ConfigMap")
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert set(config["pools"]) == {"a100", "cpu-small"}
    assert config["devicePools"] == {"gpu": "a100", "cpu": "cpu-small"}
    assert config["pools"]["cpu-small"]["device"] == "cpu"
    wrong = {**renamed, "devicePools": {"gpu": "cpu-small", "cpu": "cpu-small"}}
    error = template_error(helm_bin, tmp_path, wrong)
    assert 'devicePools.gpu: pool "cpu-small" provides cpu, not gpu' in error


def test_servicemonitor_is_off_by_default_and_scrapes_the_metrics_service(helm_bin: Path) -> None:
    assert not by_kind(render(helm_bin), "ServiceMonitor")
    objects = render(helm_bin, *values_args("servicemonitor"))
    (monitor,) = by_kind(objects, "ServiceMonitor")
    (service,) = by_kind(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["metadata"]["namespace"] == "kondense-system"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    # The ServiceMonitor can live where Prometheus looks; it still selects the release's Service.
    moved = render(
        helm_bin,
        *values_args("servicemonitor"),
        "--set",
        "metrics.serviceMonitor.namespace=monitoring",
        "--set",
        "metrics.serviceMonitor.honorLabels=false",
    )
    (monitor,) = by_kind(moved, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["kondense-system"]}
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is False


def test_pool_values_reach_the_operator_config(helm_bin: Path) -> None:
    from kondense.operator.config import parse_config

    objects = render(helm_bin, *values_args("custom-pools"))
    (config_map,) = by_kind(objects, "ConfigMap")
    # The operator's own parser reads what the chart renders.
    config = parse_config(yaml.safe_load(config_map["data"]["config.yaml"]), "config.yaml")
    pools = config.pools
    assert set(pools) == {"cpu", "gpu", "arm"}
    assert pools["gpu"].node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    # `nvidia.com/gpu: 1` (an integer in values) reaches the operator as the quantity "1".
    assert pools["gpu"].resources["limits"]["nvidia.com/gpu"] == "1"
    assert pools["cpu"].tolerations[0]["value"] == "compression"
    assert pools["arm"].image.endswith("-arm64")
    assert config.backoff_limit == 2


@pytest.mark.parametrize("files", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_operator_reads_the_rendered_config_of_every_combination(
    helm_bin: Path, files: list[str]
) -> None:
    from kondense.operator.config import parse_config

    (config_map,) = by_kind(render(helm_bin, *values_args(*files)), "ConfigMap")
    config = parse_config(yaml.safe_load(config_map["data"]["config.yaml"]), "config.yaml")
    assert {"cpu", "gpu"} <= set(config.pools)


def test_operator_args_are_ones_the_operator_accepts(helm_bin: Path) -> None:
    from kondense.operator.main import parse_args

    for files in (["namespaced"], []):
        (container,) = _operator(render(helm_bin, *values_args(*files)))["spec"]["template"][
            "spec"
        ]["containers"]
        args = parse_args(container["args"])
        assert str(args.config) == "/etc/kondense/config.yaml"
        assert args.health_port == 8081 and args.metrics_port == 8080
        assert args.namespace == (["team-a", "team-b"] if files else [])


def test_pool_change_rolls_the_operator(helm_bin: Path) -> None:
    before = _operator(render(helm_bin))["spec"]["template"]["metadata"]["annotations"]
    after = _operator(render(helm_bin, *values_args("custom-pools")))["spec"]["template"][
        "metadata"
    ]["annotations"]
    assert before["checksum/config"] != after["checksum/config"]


def test_two_replicas_elect_one_active_through_a_lease(helm_bin: Path) -> None:
    """replicaCount > 1: every replica runs with --leader-election (one active, the others
    standing by), named by its pod, with a Role for the one Lease in the release namespace."""
    from kondense.operator.main import parse_args

    objects = render(helm_bin, "--set", "replicaCount=2")
    spec = _operator(objects)["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"  # a standby is there to take over
    (container,) = spec["template"]["spec"]["containers"]
    assert parse_args(container["args"]).leader_election
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}) for e in container["env"]}
    assert env["POD_NAME"] == {"fieldPath": "metadata.name"}
    assert env["KONDENSE_OPERATOR_NAMESPACE"] == {"fieldPath": "metadata.namespace"}
    roles = [r for r in by_kind(objects, "Role") if r["metadata"]["namespace"] == "kondense-system"]
    (role,) = roles
    expected = yaml.safe_load(
        (CHART.parents[1] / "operator" / "leader-election-role.yaml").read_text()
    )
    assert role["rules"] == expected["rules"]
    (binding,) = [
        b
        for b in by_kind(objects, "RoleBinding")
        if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert (
        binding["subjects"][0]["name"]
        == _operator(objects)["spec"]["template"]["spec"]["serviceAccountName"]
    )

    single = _operator(render(helm_bin))["spec"]
    assert single["replicas"] == 1 and single["strategy"] == {"type": "Recreate"}
    (container,) = single["template"]["spec"]["containers"]
    assert not parse_args(container["args"]).leader_election
    assert not by_kind(render(helm_bin), "Role")
