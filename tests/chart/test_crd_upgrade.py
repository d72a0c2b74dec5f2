"""`helm upgrade` updates the CompressionJob CRD (issue #14 item 2), on the local cluster's real
apiserver: a release of a chart whose CRD lacks `spec.evaluation.sequenceLength` serves a CRD
that prunes or refuses the field; `helm upgrade` to the chart as it is adds it, and a
CompressionJob keeps it; `helm uninstall` (crds.keep) leaves the CRD and the CompressionJob.

The CRD is cluster-scoped and shared with every other test of the session (and other sessions on
the same cluster), which apply crds/compressionjob.yaml with kubectl. So the test:
- installs the old chart with `--take-ownership`, so that its release adopts the live CRD; Helm
  then writes the old chart's CRD over it (a CRD's versions list, schema included, is patched
  whole), which is what a first `helm install` of the old chart creates on a fresh cluster;
- keeps the window in which the CRD lacks the field to the two dry runs that prove it, and
  removes a field no cluster test sets (only runner tests and examples use sequenceLength);
- restores, whatever happens, the working tree's CRD and the Helm metadata the CRD had before.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.cluster import Cluster
from fixtures.helm import CHART, helm

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "compressionjob.yaml"
CRD_NAME = "compressionjobs.kondense.dev"
# The chart's copy of the CRD, which templates/crds/compressionjob.yaml renders.
CHART_CRD = Path("files") / "crds" / "compressionjob.yaml"
SEQUENCE_LENGTH = 256  # not the default (128): a read-back value is the one the job set
# What the chart (and Helm, on adoption) puts on the CRD; restored to their earlier values.
HELM_LABELS = [
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
]
HELM_ANNOTATIONS = [
    "meta.helm.sh/release-name",
    "meta.helm.sh/release-namespace",
    "helm.sh/resource-policy",
]
SERVED_S = 30  # a CRD change reaches the apiserver's handler for its objects within seconds


def evaluation_properties(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["evaluation"]["properties"]  # type: ignore[no-any-return]


def old_chart(tmp: Path) -> Path:
    """The chart as it is, but an earlier version whose CRD has no evaluation.sequenceLength."""
    chart = tmp / "kondense-old"
    shutil.copytree(CHART, chart)
    crd = yaml.safe_load((chart / CHART_CRD).read_text())
    del evaluation_properties(crd)["sequenceLength"]
    (chart / CHART_CRD).write_text(yaml.safe_dump(crd, sort_keys=False))
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = "0.0.1"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return chart


def job(namespace: str, name: str) -> dict[str, Any]:
    """A CompressionJob setting evaluation.sequenceLength (nothing runs it: see `values`)."""
    return {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "s3://models/encoder.onnx"},
            "steps": [{"quantize": {"mode": "dynamic"}}],
            "evaluation": {"sequenceLength": SEQUENCE_LENGTH},
            "output": {"uri": "s3://models/out/"},
        },
    }


def until(what: str, check: Callable[[], Any]) -> Any:
    """Poll `check` until it returns something true (the apiserver serves a changed CRD's
    schema to its objects shortly after the update, not at once)."""
    deadline = time.monotonic() + SERVED_S
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {SERVED_S}s: {what}"
        time.sleep(1)
    return result


def metadata_patch(before: dict[str, Any], now: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Merge-patch values putting `keys` back as `before` had them (None removes a key)."""
    return {k: before.get(k) for k in keys if before.get(k) != now.get(k)}


@pytest.fixture
def shared_crd(cluster: Cluster) -> Iterator[None]:
    """The session's CRD, applied; afterwards the working tree's CRD again, with the Helm labels
    and annotations it had before the test (none, when kubectl applied it)."""

    def crd_metadata() -> dict[str, Any]:
        done = cluster.kubectl_run("get", "crd", CRD_NAME, "-o", "json", check=False)
        return json.loads(done.stdout)["metadata"] if done.returncode == 0 else {}  # type: ignore[no-any-return]

    def apply() -> None:  # as the operator tests' `crd` fixture does
        cluster.kubectl_run("apply", "-f", str(CRD_FILE))
        cluster.kubectl_run("wait", "--for=condition=Established", f"crd/{CRD_NAME}")

    before = crd_metadata()
    apply()
    try:
        yield
    finally:
        apply()
        now = crd_metadata()
        patch = {
            "labels": metadata_patch(
                before.get("labels") or {}, now.get("labels") or {}, HELM_LABELS
            ),
            "annotations": metadata_patch(
                before.get("annotations") or {}, now.get("annotations") or {}, HELM_ANNOTATIONS
            ),
        }
        patch = {k: v for k, v in patch.items() if v}
        if patch:
            cluster.kubectl_run(
                "patch", "crd", CRD_NAME, "--type=merge", "-p", json.dumps({"metadata": patch})
            )


def dry_run_create(cluster: Cluster, body: dict[str, Any], validate: str) -> Any:
    """`kubectl create --dry-run=server`: what the apiserver would store, or its refusal."""
    return cluster.kubectl_run(
        "create", "--dry-run=server", f"--validate={validate}", "-o", "json", "-f", "-",
        input=json.dumps(body), check=False,
    )  # fmt: skip


def refused(cluster: Cluster, body: dict[str, Any]) -> Any:
    """The apiserver's refusal of `body` under strict field validation, or None."""
    done = dry_run_create(cluster, body, "strict")
    return done if done.returncode != 0 else None


def accepted(cluster: Cluster, body: dict[str, Any]) -> Any:
    """What the apiserver would store for `body` under strict field validation, or None."""
    done = dry_run_create(cluster, body, "strict")
    return json.loads(done.stdout) if done.returncode == 0 else None


def test_helm_upgrade_adds_a_crd_field_and_uninstall_keeps_crd_and_jobs(
    cluster: Cluster, helm_bin: Path, shared_crd: None, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    release = namespace = f"kd-crd-{suffix}"
    kube = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace]
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                # Only the CRD matters here: an operator of this release would watch only its
                # own namespace, and its pod stays Pending on no node, so nothing reconciles.
                "rbac": {"scope": "namespaced"},
                "watchNamespaces": [namespace],
                "nodeSelector": {"kondense.dev/test": "no-such-node"},
            }
        )
    )
    old = old_chart(tmp_path)
    generated = yaml.safe_load(CRD_FILE.read_text())
    assert "sequenceLength" in evaluation_properties(generated)
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    cluster.kubectl_run("apply", "-f", "-", input=json.dumps(ns))
    try:
        # --- the old chart: its CRD has no sequenceLength ----------------------------------
        helm(helm_bin, *kube, "install", release, str(old), "-f", str(values), "--take-ownership")
        live = json.loads(cluster.kubectl_run("get", "crd", CRD_NAME, "-o", "json").stdout)
        assert "sequenceLength" not in evaluation_properties(live)
        assert live["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
        # Strict field validation (kubectl's default) refuses the unknown field...
        early = job(namespace, "early")
        refusal = until("the old CRD refuses the field", lambda: refused(cluster, early))
        assert 'unknown field "spec.evaluation.sequenceLength"' in refusal.stderr, refusal.stderr
        # ...and without it the apiserver prunes it: the stored object would not have it.
        pruned = dry_run_create(cluster, early, "ignore")
        assert pruned.returncode == 0, pruned.stderr
        assert "sequenceLength" not in json.loads(pruned.stdout)["spec"]["evaluation"]

        # --- helm upgrade to the chart as it is: the CRD gains the field ---------------------
        upgraded = helm(helm_bin, *kube, "upgrade", release, str(CHART), "-f", str(values))
        assert "has been upgraded" in upgraded.stdout, upgraded.stdout
        live = json.loads(cluster.kubectl_run("get", "crd", CRD_NAME, "-o", "json").stdout)
        (live_version,) = live["spec"]["versions"]
        assert live_version["schema"] == generated["spec"]["versions"][0]["schema"]
        assert live["metadata"]["labels"]["helm.sh/chart"].startswith("kondense-0.")
        assert live["metadata"]["labels"]["helm.sh/chart"] != "kondense-0.0.1"
        assert live["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        late = job(namespace, "late")
        would_store = until("the new CRD accepts the field", lambda: accepted(cluster, late))
        assert would_store["spec"]["evaluation"]["sequenceLength"] == SEQUENCE_LENGTH
        cluster.kubectl_run("create", "-f", "-", input=json.dumps(job(namespace, "kept")))
        stored = json.loads(
            cluster.kubectl_run(
                "get", "compressionjob", "kept", "-n", namespace, "-o", "json"
            ).stdout
        )
        assert stored["spec"]["evaluation"]["sequenceLength"] == SEQUENCE_LENGTH

        # --- helm uninstall: crds.keep leaves the CRD, and so the CompressionJob -------------
        removed = helm(helm_bin, *kube, "uninstall", release, "--wait")
        assert f"[CustomResourceDefinition] {CRD_NAME}" in removed.stdout, removed.stdout
        assert helm(helm_bin, *kube, "status", release, check=False).returncode != 0
        left = cluster.kubectl_run("get", "deployments", "-n", namespace, "-o", "name").stdout
        assert not left.strip(), left
        cluster.kubectl_run("get", "crd", CRD_NAME)
        stored = json.loads(
            cluster.kubectl_run(
                "get", "compressionjob", "kept", "-n", namespace, "-o", "json"
            ).stdout
        )
        assert stored["spec"]["evaluation"]["sequenceLength"] == SEQUENCE_LENGTH
    finally:
        helm(helm_bin, *kube, "uninstall", release, check=False)  # after a failure
        cluster.kubectl_run("delete", "namespace", namespace, "--wait=false", check=False)
