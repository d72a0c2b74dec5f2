"""The chart's runner settings (issue #13 items 2 and 5): per-pool identity, Job metadata,
securityContext and download policy reach the operator's config, and the opt-in NetworkPolicy
limits runner egress to DNS and the storage endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fixtures.helm import by_kind, render, template_error, values_args

from kondense.api.spec import CompressionJobSpec
from kondense.operator.config import parse_config
from kondense.operator.jobs import build_runner_job


def test_pool_runner_settings_reach_the_operator_and_its_runner_jobs(helm_bin: Path) -> None:
    objects = render(helm_bin, *values_args("locked-down"))
    (config_map,) = by_kind(objects, "ConfigMap")
    config = parse_config(yaml.safe_load(config_map["data"]["config.yaml"]), "config.yaml")
    pool = config.pools["cpu"]
    assert pool.job_labels == {"kueue.x-k8s.io/queue-name": "compression"}
    assert pool.max_download_bytes == 4294967296 and pool.download_timeout_seconds == 600
    spec = CompressionJobSpec.model_validate(
        {
            "model": {"uri": "s3://m/model.onnx"},
            "steps": [{"quantize": {}}],
            "output": {"uri": "s3://o/x"},
        }
    )
    meta = {"name": "j", "namespace": "team-a", "uid": "u", "generation": 1}
    job = build_runner_job(meta, spec, "cpu", pool)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kondense-runner"
    assert pod["imagePullSecrets"] == [{"name": "corp-registry"}]
    # The chart keeps the nulls: the platform assigns the UIDs.
    assert "runAsUser" not in pod["securityContext"] and "fsGroup" not in pod["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "compression"
    assert {v["name"]: v["emptyDir"] for v in pod["volumes"]}["work"] == {"sizeLimit": "100Gi"}


def test_runner_network_policy_is_off_by_default(helm_bin: Path) -> None:
    assert by_kind(render(helm_bin), "NetworkPolicy") == []


def test_runner_network_policy_allows_only_dns_and_the_storage_endpoints(helm_bin: Path) -> None:
    policies = by_kind(render(helm_bin, *values_args("locked-down")), "NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]
    spec = policies[0]["spec"]
    assert spec["policyTypes"] == ["Egress"]
    # It selects exactly the pods the operator creates.
    meta = {"name": "j", "namespace": "team-a", "uid": "u", "generation": 1}
    job_spec = CompressionJobSpec.model_validate(
        {"model": {"uri": "s3://m/x"}, "steps": [{"quantize": {}}], "output": {"uri": "s3://o"}}
    )
    pool = parse_config({"pools": {"cpu": {"image": "x"}}}, "c").pools["cpu"]
    labels = build_runner_job(meta, job_spec, "cpu", pool)["spec"]["template"]["metadata"]
    assert spec["podSelector"]["matchLabels"].items() <= labels["labels"].items()
    dns, *storage = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert [(r["to"][0]["ipBlock"]["cidr"], [p["port"] for p in r["ports"]]) for r in storage] == [
        ("10.0.20.0/24", [9000]),
        ("52.216.0.0/15", [443]),
    ]
    # No rule reaches anything else: every egress peer is DNS or a listed CIDR.
    assert len(spec["egress"]) == 3


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"runnerNetworkPolicy": {"enabled": True}}, "runnerNetworkPolicy.storage"),
        ({"pools": {"cpu": {"allowHttp": "yes"}}}, "allowHttp"),
        ({"pools": {"cpu": {"tmpSizeLimit": "lots"}}}, "tmpSizeLimit"),
    ],
)
def test_bad_runner_values_are_refused_naming_the_key(
    helm_bin: Path, tmp_path: Path, values: dict[str, object], words: str
) -> None:
    assert words in template_error(helm_bin, tmp_path, values)
