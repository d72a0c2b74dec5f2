"""Per-namespace credentials and per-pool platform settings on the runner Job (issue #13,
items 1 and 2), the emptyDirs' size limits and the download policy handed to the runner (item 3),
and the refusal of file:// and relative URIs on pools without workingDir (item 4)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kondense.api.errors import ALLOW_HTTP_ENV, ALLOW_PRIVATE_ENV, MAX_DOWNLOAD_BYTES_ENV
from kondense.api.spec import CompressionJobSpec
from kondense.operator.config import (
    OperatorConfig,
    PoolConfig,
    credential_env_warnings,
    parse_config,
)
from kondense.operator.jobs import build_runner_job
from kondense.operator.pools import LocalUriInCluster, select_node_pool

CPU = PoolConfig(image="runner-cpu:1", nodeSelector={"kondense.dev/pool": "cpu"})
META = {"name": "bert", "namespace": "team-a", "uid": "u-1", "generation": 1}


def spec(**extra: Any) -> CompressionJobSpec:
    body: dict[str, Any] = {
        "model": {"uri": "s3://models/bert"},
        "steps": [{"quantize": {"mode": "dynamic"}}],
        "output": {"uri": "s3://out/bert"},
    }
    body.update(extra)
    return CompressionJobSpec.model_validate(body)


def build(pool: PoolConfig = CPU, **extra: Any) -> dict[str, Any]:
    return build_runner_job(META, spec(**extra), "cpu", pool)


def pod(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = job["spec"]["template"]["spec"]
    return result


def container(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = pod(job)["containers"][0]
    return result


def env(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(job)["env"]}


# --- item 1: credentials per namespace -------------------------------------------------------


def test_storage_secret_reaches_the_runner_by_name_through_env_from() -> None:
    job = build(storage={"secretRef": {"name": "team-a-s3"}})
    assert container(job)["envFrom"] == [{"secretRef": {"name": "team-a-s3"}}]
    # By name only: the kubelet resolves it in the Job's (the CompressionJob's) namespace.
    assert job["metadata"]["namespace"] == "team-a"


def test_a_job_without_storage_credentials_gets_no_env_from() -> None:
    assert "envFrom" not in container(build())


@pytest.mark.parametrize("name", ["other-ns/creds", "creds.", "Creds", "a" * 254, ""])
def test_a_secret_of_another_namespace_cannot_be_named(name: str) -> None:
    """A Secret reference is a name and nothing else: no namespace field, no 'ns/name'."""
    with pytest.raises(ValidationError, match=r"secretRef.name"):
        spec(storage={"secretRef": {"name": name}})
    with pytest.raises(ValidationError, match=r"namespace"):
        spec(storage={"secretRef": {"name": "creds", "namespace": "other"}})


def test_job_service_account_wins_over_the_pools_and_keeps_the_token_unmounted() -> None:
    pool = CPU.model_copy(update={"service_account_name": "pool-runner"})
    assert pod(build(pool))["serviceAccountName"] == "pool-runner"
    job = build(pool, serviceAccountName="team-a-irsa")
    assert pod(job)["serviceAccountName"] == "team-a-irsa"
    assert pod(job)["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod(build())


def test_a_service_account_of_another_namespace_cannot_be_named() -> None:
    with pytest.raises(ValidationError, match=r"serviceAccountName"):
        spec(serviceAccountName="system:serviceaccount:kube-system:admin")


def test_a_pool_env_that_sets_storage_credentials_is_warned_about_naming_pool_and_keys() -> None:
    """Kubernetes puts env above envFrom: a pool's AWS_* would silently beat every job's own
    Secret. envFrom, and other variables, do not."""
    config = parse_config(
        {
            "pools": {
                "shared": {
                    "image": "x",
                    "env": {
                        "AWS_SECRET_ACCESS_KEY": "s",
                        "AWS_ACCESS_KEY_ID": "k",
                        "HTTPS_PROXY": "p",
                    },
                },
                "teams": {
                    "image": "x",
                    "env": {"HF_HUB_OFFLINE": "1"},
                    "envFrom": [{"secretRef": {"name": "default-s3"}}],
                },
            }
        },
        "config.yaml",
    )
    (warning,) = credential_env_warnings(config)
    assert warning.startswith("pools.shared.env sets AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY:")
    assert "spec.storage.secretRef" in warning and "pools.shared.envFrom" in warning
    assert "HTTPS_PROXY" not in warning


# --- item 2: per-pool platform settings ------------------------------------------------------


def test_pool_pull_secrets_env_from_labels_and_annotations_reach_the_job() -> None:
    pool = PoolConfig.model_validate(
        {
            "image": "registry.corp/runner:1",
            "imagePullSecrets": ["corp-registry"],
            "envFrom": [{"configMapRef": {"name": "proxy-settings"}}],
            "jobLabels": {
                "kueue.x-k8s.io/queue-name": "team-a",
                "app.kubernetes.io/managed-by": "someone-else",
            },
            "jobAnnotations": {"cost-center": "ml"},
        }
    )
    job = build(pool, storage={"secretRef": {"name": "s3"}})
    assert pod(job)["imagePullSecrets"] == [{"name": "corp-registry"}]
    assert container(job)["envFrom"] == [
        {"configMapRef": {"name": "proxy-settings"}},
        {"secretRef": {"name": "s3"}},
    ]
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
        # kondense's own labels select its pods: a pool cannot replace them.
        assert labels["app.kubernetes.io/managed-by"] == "kondense-operator"
    assert job["metadata"]["annotations"]["cost-center"] == "ml"
    assert job["metadata"]["annotations"]["kondense.dev/compressionjob"] == "bert"


def test_a_platform_that_assigns_uids_drops_the_fixed_65532() -> None:
    """OpenShift's restricted-v2 assigns runAsUser/fsGroup from the namespace's range."""
    pool = PoolConfig.model_validate(
        {
            "image": "runner:1",
            "podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None},
            "containerSecurityContext": {"privileged": False},
        }
    )
    job = build(pool)
    security = pod(job)["securityContext"]
    assert "runAsUser" not in security and "fsGroup" not in security
    assert security["runAsNonRoot"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container(job)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container(job)["securityContext"]["privileged"] is False
    assert pod(build())["securityContext"]["runAsUser"] == 65532


def test_pool_settings_parse_from_the_operator_config_naming_bad_keys() -> None:
    config = parse_config(
        {"pools": {"cpu": {"image": "x", "serviceAccountName": "runner", "allowHttp": True}}},
        "config.yaml",
    )
    assert config.pools["cpu"].service_account_name == "runner"
    with pytest.raises(ValueError, match=r"pools.cpu.serviceAccountName"):
        parse_config({"pools": {"cpu": {"image": "x", "serviceAccountName": "a/b"}}}, "c.yaml")


# --- item 3: what the runner is given ----------------------------------------------------------


def test_empty_dirs_have_a_size_limit() -> None:
    volumes = {v["name"]: v for v in pod(build())["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "16Gi"}
    assert volumes["work"]["emptyDir"] == {"sizeLimit": "64Gi"}
    pool = CPU.model_copy(update={"work_size_limit": "200Gi"})
    assert {v["name"]: v for v in pod(build(pool))["volumes"]}["work"]["emptyDir"] == {
        "sizeLimit": "200Gi"
    }


def test_download_policy_is_strict_by_default_and_the_spec_overrides_the_cap() -> None:
    strict = env(build())
    assert strict[ALLOW_HTTP_ENV] == "0" and strict[ALLOW_PRIVATE_ENV] == "0"
    assert strict[MAX_DOWNLOAD_BYTES_ENV] == str(8 * 1024**3)
    pool = CPU.model_copy(update={"allow_http": True, "allow_private_networks": True})
    lax = env(build(pool, storage={"maxDownloadBytes": 1000}))
    assert lax[ALLOW_HTTP_ENV] == "1" and lax[ALLOW_PRIVATE_ENV] == "1"
    assert lax[MAX_DOWNLOAD_BYTES_ENV] == "1000"


# --- item 4: cluster URIs --------------------------------------------------------------------


def config(**pool: Any) -> OperatorConfig:
    return OperatorConfig.model_validate({"pools": {"cpu": {"image": "x", **pool}}})


@pytest.mark.parametrize(
    ("field", "uri"),
    [
        ("model", "file:///models/bert"),
        ("model", "models/bert"),
        ("output", "/out/bert"),
        ("output", "file:///out/bert"),
    ],
)
def test_local_uris_are_refused_on_a_pool_without_working_dir(field: str, uri: str) -> None:
    with pytest.raises(LocalUriInCluster) as refused:
        select_node_pool(spec(**{field: {"uri": uri}}), config())
    message = str(refused.value)
    assert message.startswith(f"spec.{field}.uri: ")
    assert "s3://" in message and "pvc://" in message
    assert refused.value.reason == "LocalUriInCluster"


def test_local_uris_run_on_a_pool_with_working_dir_and_remote_ones_anywhere() -> None:
    local = spec(model={"uri": "models/bert"}, output={"uri": "out/bert"})
    assert select_node_pool(local, config(workingDir="/work"))[0] == "cpu"
    assert select_node_pool(spec(), config())[0] == "cpu"
    claims = spec(model={"uri": "pvc://models/bert"}, output={"uri": "pvc://out/bert"})
    assert select_node_pool(claims, config())[0] == "cpu"
