"""Storage credentials per namespace and cluster URIs, on the local control plane (issue #13
items 1 and 4): a job's own Secret reaches its runner pod by envFrom (the operator, which may
not read Secrets, never sees it) and the runner reads and writes S3 (moto) with it; a file://
URI on a pool without workingDir fails at reconcile, before any runner Job exists.

The storage is the cluster's S3 server (moto's, a Service in kube-system): runner pods reach
it at `cluster.s3_in_cluster`, this process at `cluster.s3_url`."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from fixtures.cluster import Cluster
from fixtures.models import build_tiny_onnx
from fixtures.operator_cluster import Operator, compression_job, phase_is, wait_cj

pytestmark = pytest.mark.cluster

QUICK = {"requireSpeedup": False, "maxMetricDrop": 1.0, "warmup": 1, "runs": 5}


def apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    from kubernetes import client

    client.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
        "kondense.dev", "v1alpha1", namespace, "compressionjobs", body
    )


def runner_jobs(cluster: Cluster, namespace: str) -> list[Any]:
    from kubernetes import client

    return list(client.BatchV1Api(cluster.api_client).list_namespaced_job(namespace).items)


def test_a_jobs_own_secret_reaches_its_runner_which_reads_and_writes_s3_with_it(
    cluster: Cluster, operator: Operator, kop_namespace: str, tmp_path: Path
) -> None:
    import boto3
    from kubernetes import client

    keys = {"aws_access_key_id": "team-a", "aws_secret_access_key": "team-a-secret"}
    s3 = boto3.client("s3", endpoint_url=cluster.s3_url, region_name="us-east-1", **keys)
    team = f"team-a-{kop_namespace}"  # a bucket of this test's own on the shared server
    s3.create_bucket(Bucket=team)
    model = build_tiny_onnx(tmp_path / "model.onnx")
    s3.upload_file(str(model), team, "models/tiny.onnx")
    # Only the Secret says where the storage is (the `cloud` pool's env has no endpoint and no
    # keys): without it the runner could not find it.
    secret = {
        "AWS_ACCESS_KEY_ID": "team-a",
        "AWS_SECRET_ACCESS_KEY": "team-a-secret",
        "AWS_ENDPOINT_URL": cluster.s3_in_cluster,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    client.CoreV1Api(cluster.api_client).create_namespaced_secret(
        kop_namespace,
        {
            "metadata": {"name": "team-a-s3"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret.items()},
        },
    )
    spec = {
        "model": {
            "uri": f"s3://{team}/models/tiny.onnx",
            "inputs": [{"name": "x", "shape": [1, 16]}],
        },
        "steps": [{"quantize": {"mode": "dynamic"}}],
        "evaluation": QUICK,
        "output": {"uri": f"s3://{team}/out/tiny"},
        "nodePool": "cloud",
        "storage": {"secretRef": {"name": "team-a-s3"}},
    }
    apply(cluster, kop_namespace, compression_job("with-secret", **spec))
    body = wait_cj(cluster, kop_namespace, "with-secret", phase_is("Succeeded", "Failed"), 300)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    (job,) = runner_jobs(cluster, kop_namespace)
    container = job.spec.template.spec.containers[0]
    assert [source.secret_ref.name for source in container.env_from] == ["team-a-s3"]
    assert not any(e.name.startswith("AWS_") for e in container.env), "nothing copied in"
    listed = s3.list_objects_v2(Bucket=team, Prefix="out/tiny/")["Contents"]
    assert "out/tiny/report.json" in {o["Key"] for o in listed}


def test_the_operator_warns_at_start_that_a_pools_env_credentials_beat_jobs_secrets(
    operator: Operator,
) -> None:
    """The local cpu pool carries the test S3 server's keys in its env; `cloud` does not."""
    log = operator.log(tail=None)
    assert "pools.cpu.env sets AWS_ACCESS_KEY_ID, AWS_DEFAULT_REGION" in log, log
    assert "pools.cloud.env" not in log


def test_a_file_uri_on_a_pool_without_working_dir_fails_at_reconcile(
    cluster: Cluster, operator: Operator, kop_namespace: str
) -> None:
    spec = {
        "model": {"uri": "file:///models/tiny.onnx"},
        "steps": [{"quantize": {"mode": "dynamic"}}],
        "output": {"uri": "s3://team-a/out"},
        "nodePool": "cloud",
    }
    apply(cluster, kop_namespace, compression_job("local-uri", **spec))
    body = wait_cj(cluster, kop_namespace, "local-uri", phase_is("Failed"), 60)
    status = body["status"]
    assert status["reason"] == "LocalUriInCluster", status
    assert status["message"].startswith("spec.model.uri: 'file:///models/tiny.onnx' is a file")
    assert "s3://" in status["message"] and "pvc://" in status["message"]
    assert runner_jobs(cluster, kop_namespace) == []
