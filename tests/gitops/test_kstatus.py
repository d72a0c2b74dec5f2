"""kstatus (sigs.k8s.io/cli-utils, the library behind Flux's health checks, built from its Go
module in kstatus/) on CompressionJobs: the operator's status in every phase, from its own
status functions and live from the local cluster, computes to InProgress, Current or Failed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.cluster import Cluster
from fixtures.gitops import ARGOCD, ARGOCD_CM, argocd_health, kstatus
from fixtures.models import build_tiny_onnx
from fixtures.operator_cluster import GROUP, PLURAL, VERSION, Operator, compression_job, wait_cj
from gitops.health_testdata import cases

# What Flux sees for each object of the Argo CD testdata.
KSTATUS = {
    # Just applied, with the CRD's status default (observedGeneration 0): not reconciled yet.
    # Without any status kstatus would say Current (it cannot tell "not reconciled yet" from
    # "needs no status"), and Flux would count the job ready before the operator saw it.
    "new": "InProgress",
    "pending-creating-job": "InProgress",
    "pending-pod": "InProgress",
    # Waiting for Kueue's quota is not stuck: Flux waits, as for a pod being scheduled.
    "pending-queued": "InProgress",
    "stalled-unschedulable": "Failed",
    "stalled-image-pull": "Failed",
    "running": "InProgress",
    "succeeded": "Current",
    "failed-bad-input": "Failed",
    "failed-deadline": "Failed",
    "failed-unknown-pool": "Failed",
    "generation-not-observed": "InProgress",
}


def test_kstatus_of_every_phase_and_stalled(kstatus_bin: Path) -> None:
    made = {name: cj for name, cj, _ in cases()}
    assert set(made) == set(KSTATUS)
    listing = {"apiVersion": "v1", "kind": "List", "items": list(made.values())}
    got = kstatus(kstatus_bin, json.dumps(listing))
    by_case = {name: got[cj["metadata"]["name"]]["status"] for name, cj in made.items()}
    assert by_case == KSTATUS
    # Failed carries the operator's words, as `flux get kustomizations` shows them.
    failed = got[made["failed-bad-input"]["metadata"]["name"]]
    assert failed["message"] == made["failed-bad-input"]["status"]["message"]


TINY_INPUTS = [{"name": "x", "shape": [1, 16]}]
QUICK_EVALUATION = {"requireSpeedup": False, "maxMetricDrop": 1.0, "warmup": 2, "runs": 20}
RUN_S = 300  # apply -> a tiny recipe's terminal status, runner pod start included


def _spec(model: str, out: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": {"uri": model, "format": "onnx", "inputs": TINY_INPUTS},
        "steps": [{"quantize": {"mode": "dynamic"}}],
        "evaluation": QUICK_EVALUATION,
        "output": {"uri": out},
        **extra,
    }


def _has(condition: str) -> Any:
    return lambda body: any(
        c["type"] == condition and c["status"] == "True"
        for c in (body.get("status") or {}).get("conditions") or []
    )


@pytest.mark.cluster
def test_live_compressionjobs_compute_to_inprogress_current_and_failed(
    cluster: Cluster,
    operator: Operator,
    kop_namespace: str,
    bucket: str,
    tmp_path: Path,
    kstatus_bin: Path,
    argocd_health_bin: Path,
) -> None:
    from kubernetes import client

    model = cluster.put_s3(build_tiny_onnx(tmp_path / "tiny.onnx"), bucket, "models/tiny.onnx")
    jobs = {
        # The real runner on a CPU node.
        "succeeds": _spec(model, f"s3://{bucket}/out-ok"),
        # The runner refuses a model that is not there: BadInput, not retried.
        "bad-input": _spec(f"s3://{bucket}/missing.onnx", f"s3://{bucket}/out-bad"),
        # Its runner sleeps until deleted: Running for as long as the test looks.
        "runs": _spec(model, f"s3://{bucket}/out-run", nodePool="sleepy"),
        # No node has the pool's label: Pending, Stalled with the scheduler's words.
        "stalls": _spec(model, f"s3://{bucket}/out-nowhere", nodePool="nowhere"),
    }
    api = client.CustomObjectsApi(cluster.api_client)
    for name, spec in jobs.items():
        api.create_namespaced_custom_object(
            GROUP, VERSION, kop_namespace, PLURAL, compression_job(name, **spec)
        )
    started = time.monotonic()
    wait_cj(cluster, kop_namespace, "runs", _has("Reconciling"), RUN_S)
    wait_cj(cluster, kop_namespace, "runs", lambda b: b["status"]["phase"] == "Running", RUN_S)
    wait_cj(cluster, kop_namespace, "stalls", _has("Stalled"), RUN_S)
    wait_cj(cluster, kop_namespace, "succeeds", _has("Ready"), RUN_S)
    wait_cj(cluster, kop_namespace, "bad-input", _has("Failed"), RUN_S)
    print(f"all four in their phase after {time.monotonic() - started:.0f} s")

    live = cluster.kubectl_run("get", "-n", kop_namespace, "compressionjobs", "-o", "json").stdout
    phases = {i["metadata"]["name"]: i["status"]["phase"] for i in json.loads(live)["items"]}
    assert phases == {
        "succeeds": "Succeeded",
        "bad-input": "Failed",
        "runs": "Running",
        "stalls": "Pending",
    }, phases
    got = kstatus(kstatus_bin, live)
    assert {name: r["status"] for name, r in got.items()} == {
        "succeeds": "Current",
        "bad-input": "Failed",
        "runs": "InProgress",
        "stalls": "Failed",
    }, got
    assert "missing.onnx" in got["bad-input"]["message"], got["bad-input"]
    assert "node affinity/selector" in got["stalls"]["message"], got["stalls"]

    # The same live objects through Argo CD's health machinery and the chart's argocd-cm.
    health = {r["name"]: r.get("healthStatus") or r for r in argocd_health(argocd_health_bin, live)}
    assert {name: h.get("status") for name, h in health.items()} == {
        "succeeds": "Healthy",
        "bad-input": "Degraded",
        "runs": "Progressing",
        "stalls": "Degraded",
    }, health
    assert health["stalls"]["message"].startswith("Pending (Unschedulable): ")


@pytest.mark.cluster
def test_the_readme_command_merges_the_health_check_into_argocd_cm(
    cluster: Cluster, kop_namespace: str
) -> None:
    """`kubectl patch configmap argocd-cm --patch-file` as the chart's README says, on a
    ConfigMap holding settings of its own: the health check is added, nothing else changes."""
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm"},
        "data": {"url": "https://argocd.example.com"},
    }
    cluster.kubectl_run("apply", "-n", kop_namespace, "-f", "-", input=yaml.safe_dump(cm))
    cluster.kubectl_run(
        "patch", "-n", kop_namespace, "configmap", "argocd-cm", "--patch-file", str(ARGOCD_CM)
    )
    got = cluster.kubectl_run("get", "-n", kop_namespace, "configmap", "argocd-cm", "-o", "json")
    data = json.loads(got.stdout)["data"]
    assert data == {
        "url": "https://argocd.example.com",
        "resource.customizations.health.kondense.dev_CompressionJob": (
            ARGOCD / "health.lua"
        ).read_text(),
    }


@pytest.mark.cluster
def test_a_just_applied_job_is_in_progress_before_the_operator_sees_it(
    cluster: Cluster, operator: Operator, namespace: str, kstatus_bin: Path
) -> None:
    """In a namespace no operator watches: the apiserver fills in the CRD's status default
    (observedGeneration 0), so kstatus says InProgress, not Current, and Argo CD Progressing."""
    body = compression_job("fresh", **_spec("s3://nowhere/tiny.onnx", "s3://nowhere/out"))
    cluster.kubectl_run("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    live = cluster.kubectl_run("get", "-n", namespace, "compressionjob", "fresh", "-o", "json")
    assert json.loads(live.stdout)["status"] == {"observedGeneration": 0}
    assert kstatus(kstatus_bin, live.stdout)["fresh"]["status"] == "InProgress"
