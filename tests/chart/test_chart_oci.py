"""The chart as a package in an OCI registry (issue #14 item 7): `helm package`, `helm push` to
the local cluster's registry (the distribution registry the nodes pull images from), and
`helm install oci://…` from there onto the real nodes, as a platform team installs a chart
from its own registry."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.cluster import Cluster
from fixtures.helm import CHART, helm

pytestmark = pytest.mark.cluster

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def test_the_packaged_chart_installs_from_the_registry(
    cluster: Cluster, helm_bin: Path, tmp_path: Path
) -> None:
    state = json.loads((cluster.repo / ".cluster" / "state.json").read_text())
    registry = state["registry"]  # the cluster's registry, as this machine reaches it
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    # A fresh repository path per run, so the push is not answered by an earlier one.
    repository = f"oci://{registry}/charts-{uuid.uuid4().hex[:8]}"
    env = ["--kubeconfig", str(cluster.kubeconfig)]

    packaged = helm(helm_bin, "package", str(CHART), "--destination", str(tmp_path)).stdout
    archive = tmp_path / f"kondense-{version}.tgz"
    assert archive.is_file(), packaged
    pushed = helm(helm_bin, "push", str(archive), repository, "--plain-http")
    where = f"{repository.removeprefix('oci://')}/kondense:{version}"
    assert where in pushed.stdout + pushed.stderr

    shown = helm(
        helm_bin, "show", "chart", f"{repository}/kondense", "--version", version, "--plain-http"
    )
    assert yaml.safe_load(shown.stdout)["name"] == "kondense"

    suffix = uuid.uuid4().hex[:6]
    release_ns, jobs_ns = f"kd-oci-{suffix}", f"kd-oci-jobs-{suffix}"
    for ns in (release_ns, jobs_ns):
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        body["metadata"]["labels"] = RESTRICTED
        cluster.kubectl_run("apply", "-f", "-", input=json.dumps(body))
    operator = cluster.image("operator")
    repo, tag = operator.rsplit(":", 1)
    values: dict[str, Any] = {
        "image": {"repository": repo, "tag": tag},
        # Namespaced: it must not reconcile the CompressionJobs of tests running alongside it.
        "rbac": {"scope": "namespaced"},
        "watchNamespaces": [jobs_ns],
        # The cluster's CRD is applied by the test fixtures and shared: no release may own it.
        "crds": {"enabled": False},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    try:
        helm(
            helm_bin, *env, "install", "kd-oci", f"{repository}/kondense", "--version", version,
            "--plain-http", "--namespace", release_ns, "-f", str(tmp_path / "values.yaml"),
            "--wait", "--timeout", "5m",
        )  # fmt: skip
        listed = helm(helm_bin, *env, "list", "-n", release_ns, "-o", "json").stdout
        (release,) = json.loads(listed)
        assert release["status"] == "deployed" and release["chart"] == f"kondense-{version}"
        deploy = json.loads(
            cluster.kubectl_run("get", "deploy", "-n", release_ns, "-o", "json").stdout
        )["items"][0]
        assert deploy["status"].get("availableReplicas") == 1
        (container,) = deploy["spec"]["template"]["spec"]["containers"]
        assert container["image"] == operator
    finally:
        subprocess.run(
            [str(helm_bin), *env, "uninstall", "kd-oci", "-n", release_ns, "--wait"],
            capture_output=True,
            timeout=300,
        )
        for ns in (release_ns, jobs_ns):
            cluster.kubectl_run("delete", "namespace", ns, "--wait=false", check=False)
