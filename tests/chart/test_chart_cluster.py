"""The chart on the real local control plane: server-side dry runs of every values combination,
and a release whose operator pod really runs under the chart's ServiceAccount and RBAC, in
namespaces enforcing the restricted Pod Security Standard.

One release serves the install / job / upgrade / uninstall tests (in that order): installing is
the slow part, and the order is the life of a release. It watches only its own jobs namespace
(namespaced RBAC), so it never touches CompressionJobs of tests running alongside it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.cluster import free_port
from fixtures.helm import CHART, helm, values_args
from fixtures.models import build_tiny_onnx

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
KUBECONFIG = REPO / ".cluster" / "kubeconfig"
KUBECTL = REPO / ".cluster" / "bin" / "kubectl"
CRD = REPO / "crds" / "compressionjob.yaml"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# prometheus-operator's CRD is not installed on the test cluster; the dry run of the
# ServiceMonitor combination installs this minimal stand-in (same group/version/kind, schema
# left open) so the apiserver validates everything else about the object.
SERVICEMONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
            "listKind": "ServiceMonitorList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(KUBECONFIG), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def get(*args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def create_namespace(name: str, labels: dict[str, str]) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    kubectl("apply", "-f", "-", stdin=json.dumps(ns))


def helm_k(helm_bin: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return helm(helm_bin, "--kubeconfig", str(KUBECONFIG), *args, check=check)


@pytest.fixture(scope="module")
def kube(cluster: Any) -> None:
    """The local control plane is up (the project's `cluster` fixture) with the CRD applied."""
    assert CRD.is_file(), "crds/compressionjob.yaml is missing: generate it with `kondense crd`"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/compressionjobs.kondense.dev")


# --- every values combination, validated by the apiserver -------------------------------------

DRY_RUN_COMBINATIONS = {
    "defaults": [],
    "namespaced-rbac": ["namespaced"],
    "servicemonitor": ["servicemonitor"],
    "custom-pools": ["custom-pools"],
    "all-together": ["namespaced", "servicemonitor", "custom-pools"],
    "locked-down": ["locked-down"],
}


@pytest.fixture(scope="module")
def servicemonitor_crd(cluster: Any) -> Iterator[None]:
    existed = (
        kubectl("get", "crd", "servicemonitors.monitoring.coreos.com", check=False).returncode == 0
    )
    if not existed:
        kubectl("apply", "-f", "-", stdin=json.dumps(SERVICEMONITOR_CRD))
        kubectl("wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com")
    yield
    if not existed:
        kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com", "--wait=false")


@pytest.mark.parametrize("files", DRY_RUN_COMBINATIONS.values(), ids=DRY_RUN_COMBINATIONS.keys())
def test_rendered_chart_passes_server_side_dry_run(
    helm_bin: Path, servicemonitor_crd: None, tmp_path: Path, files: list[str]
) -> None:
    suffix = uuid.uuid4().hex[:6]
    release_ns, team_a, team_b = (f"kd-dry-{suffix}", f"kd-dry-a-{suffix}", f"kd-dry-b-{suffix}")
    for ns in (release_ns, team_a, team_b):
        create_namespace(ns, RESTRICTED)
    try:
        # The namespaced values name team-a/team-b; point them at namespaces that exist.
        extra: dict[str, Any] = {}
        if "namespaced" in files:
            extra["watchNamespaces"] = [team_a, team_b]
        if "locked-down" in files:  # its runner NetworkPolicy goes to team-a and team-b
            extra["runnerNetworkPolicy"] = {"namespaces": [team_a, team_b]}
        rendered = helm(
            helm_bin,
            "template",
            f"dry-{suffix}",
            str(CHART),
            "--namespace",
            release_ns,
            *values_args(*files, extra=extra, tmp=tmp_path),
        ).stdout
        done = kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
        kinds = {line.split("/")[0] for line in done.stdout.splitlines()}
        assert "deployment.apps" in kinds
        if "servicemonitor" in files:
            assert "servicemonitor.monitoring.coreos.com" in kinds
        if "locked-down" in files:
            assert "networkpolicy.networking.k8s.io" in kinds
    finally:
        for ns in (release_ns, team_a, team_b):
            kubectl("delete", "namespace", ns, "--wait=false")


# --- one release, installed for real ----------------------------------------------------------


@dataclass
class Release:
    name: str
    namespace: str  # where the operator runs
    jobs_namespace: str  # the one namespace it watches
    service_account: str
    workdir: Path
    install_output: str
    values: dict[str, Any]


def release_values(jobs_ns: str) -> dict[str, Any]:
    return {
        "rbac": {"scope": "namespaced"},
        "watchNamespaces": [jobs_ns],
        "metrics": {"port": free_port()},
        "probes": {"port": free_port()},
        # The operator belongs on a CPU node (the node agent runs it as a local process).
        "nodeSelector": {"kondense.dev/pool": "cpu"},
        "operator": {"logLevel": "debug"},
        # Runner pods are local processes reading file:// models under build/: only a pool
        # with workingDir runs jobs with file:// URIs (others are refused, LocalUriInCluster).
        "pools": {"cpu": {"workingDir": str(REPO / "build" / "chart-tests")}},
    }


@pytest.fixture(scope="module")
def release(
    helm_bin: Path, kube: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    rel = Release(
        name=f"kd-{suffix}",
        namespace=f"kd-system-{suffix}",
        jobs_namespace=f"kd-jobs-{suffix}",
        service_account=f"kd-{suffix}-kondense",
        # Runner pods get their own /tmp (an emptyDir), so the model lives under build/.
        workdir=REPO / "build" / "chart-tests" / suffix,
        install_output="",
        values=release_values(f"kd-jobs-{suffix}"),
    )
    rel.workdir.mkdir(parents=True)
    for ns in (rel.namespace, rel.jobs_namespace):
        create_namespace(ns, RESTRICTED)
    values = rel.workdir / "values.yaml"
    values.write_text(yaml.safe_dump(rel.values))
    try:
        rel.install_output = helm_k(
            helm_bin,
            "install",
            rel.name,
            str(CHART),
            "--namespace",
            rel.namespace,
            "-f",
            str(values),
            "--wait",
            "--timeout",
            "180s",
        ).stdout
        yield rel
    finally:
        helm_k(helm_bin, "uninstall", rel.name, "--namespace", rel.namespace, check=False)
        # With the operator gone nobody removes its finalizers; without this the namespace
        # would hang in Terminating (the README says: delete jobs before uninstalling).
        left = kubectl(
            "get", "compressionjobs", "-n", rel.jobs_namespace, "-o", "name", check=False
        )
        for obj in left.stdout.split():
            kubectl(
                "patch",
                obj,
                "-n",
                rel.jobs_namespace,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
        for ns in (rel.namespace, rel.jobs_namespace):
            kubectl("delete", "namespace", ns, "--wait=false", check=False)
        shutil.rmtree(rel.workdir, ignore_errors=True)


def operator_pod(rel: Release) -> dict[str, Any]:
    pods = get("pods", "-n", rel.namespace, "-l", f"app.kubernetes.io/instance={rel.name}")
    running = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
    assert len(running) == 1, f"expected one running operator pod, got {pods['items']}"
    return running[0]  # type: ignore[no-any-return]


def apply_int8_job(rel: Release, name: str) -> None:
    model = build_tiny_onnx(rel.workdir / f"{name}.onnx")
    job = {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": name, "namespace": rel.jobs_namespace},
        "spec": {
            "model": {"uri": f"file://{model}", "inputs": [{"name": "x", "shape": [1, 16]}]},
            "steps": [{"quantize": {"mode": "dynamic"}}],
            # A chart test, not a benchmark: few timed runs, and a tiny MLP need not speed up.
            "evaluation": {"warmup": 1, "runs": 5, "requireSpeedup": False, "maxMetricDrop": 1},
            "output": {"uri": f"file://{rel.workdir / name}"},
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(job))


def wait_ready(rel: Release, name: str) -> dict[str, Any]:
    done = kubectl(
        "wait",
        "-n",
        rel.jobs_namespace,
        "--for=condition=Ready",
        f"compressionjob/{name}",
        "--timeout=240s",
        check=False,
        timeout=260,
    )
    cj = get("compressionjob", name, "-n", rel.jobs_namespace)
    if done.returncode != 0:
        status = json.dumps(cj.get("status"), indent=1)
        raise AssertionError(f"{name} not Ready: {status}\noperator log:\n{operator_log(rel)}")
    return cj


def operator_log(rel: Release) -> str:
    """The last lines the operator wrote (the node agent keeps pod logs under .cluster/pods)."""
    pod = operator_pod(rel)
    path = REPO / ".cluster" / "pods" / pod["metadata"]["uid"] / "operator.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-40:]) if path.exists() else ""


def runner_nodes(rel: Release, cj_name: str) -> set[str]:
    pods = get("pods", "-n", rel.jobs_namespace)["items"]
    return {
        p["spec"].get("nodeName", "")
        for p in pods
        if any(
            ref["kind"] == "Job" and cj_name in ref["name"]
            for ref in p["metadata"].get("ownerReferences", [])
        )
    }


def test_install_prints_how_to_apply_a_first_job(release: Release) -> None:
    notes = release.install_output.split("NOTES:", 1)[1]
    assert "kind: CompressionJob" in notes and f"namespace: {release.jobs_namespace}" in notes


def test_operator_pod_runs_on_a_cpu_node_under_the_chart_service_account(release: Release) -> None:
    pod = operator_pod(release)
    assert pod["spec"]["serviceAccountName"] == release.service_account
    node = get("node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["kondense.dev/pool"] == "cpu"
    # The projected token the operator authenticates with (no admin kubeconfig in the pod).
    volumes = [v for v in pod["spec"]["volumes"] if "projected" in v]
    sources = [s for v in volumes for s in v["projected"]["sources"]]
    assert any("serviceAccountToken" in s for s in sources)
    assert all(c["ready"] for c in pod["status"]["containerStatuses"])


def http_get(url: str, deadline_s: float = 60) -> str:
    """GET url, retrying while the operator is still starting up."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()  # type: ignore[no-any-return]
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(1)


def test_probes_and_metrics_point_at_the_operators_endpoints(release: Release) -> None:
    # The node agent does not run probes, so ask the ports the chart configured directly
    # (pods share the host network there): a wrong path or port fails here.
    container = operator_pod(release)["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["livenessProbe"]["httpGet"]
    assert probe == container["readinessProbe"]["httpGet"]
    http_get(f"http://127.0.0.1:{ports[probe['port']]}{probe['path']}")
    metrics = http_get(f"http://127.0.0.1:{ports['metrics']}/metrics")
    assert "# TYPE" in metrics and "kondense" in metrics


def test_operator_pod_admitted_under_restricted_pod_security(release: Release) -> None:
    ns = get("namespace", release.namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    operator_pod(release)  # it exists, so admission let it in


def test_compression_job_reaches_ready_through_the_installed_operator(release: Release) -> None:
    apply_int8_job(release, "int8-first")
    cj = wait_ready(release, "int8-first")
    assert cj["status"]["phase"] == "Succeeded"
    # The runner pod ran in a namespace enforcing `restricted`: admission let it in.
    nodes = runner_nodes(release, "int8-first")
    assert nodes and all(n.startswith("cpu-") for n in nodes), nodes


def sa_can(rel: Release, verb: str, resource: str, namespace: str | None) -> bool:
    sa = f"system:serviceaccount:{rel.namespace}:{rel.service_account}"
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    # can-i reads "kind/x" as a resource name; a subresource goes in its own flag.
    resource, _, sub = resource.partition("/")
    subresource = ["--subresource", sub] if sub else []
    done = kubectl("auth", "can-i", verb, resource, *subresource, "--as", sa, *scope, check=False)
    assert done.stdout.strip() in {"yes", "no"}, done.stderr
    return done.stdout.strip() == "yes"


NEEDED = [
    ("watch", "compressionjobs.kondense.dev"),
    ("patch", "compressionjobs.kondense.dev/status"),
    ("create", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("list", "pods"),
    ("create", "events"),
]
FORBIDDEN = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("create", "pods"),
    ("delete", "compressionjobs.kondense.dev"),
    ("patch", "compressionjobs.kondense.dev"),  # the operator never writes spec or metadata
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
]


def test_namespaced_service_account_permissions_are_pinned(release: Release) -> None:
    for verb, resource in NEEDED:
        assert sa_can(release, verb, resource, release.jobs_namespace), f"cannot {verb} {resource}"
        # Only in the watched namespace: not in its own, not cluster-wide.
        assert not sa_can(release, verb, resource, "default"), f"{verb} {resource} in default"
        assert not sa_can(release, verb, resource, None), f"{verb} {resource} cluster-wide"
    for verb, resource in FORBIDDEN:
        for ns in (release.jobs_namespace, release.namespace, None):
            assert not sa_can(release, verb, resource, ns), f"may {verb} {resource} in {ns}"


def test_cluster_scope_service_account_permissions_are_pinned(
    helm_bin: Path, release: Release
) -> None:
    # Only the ServiceAccount and RBAC of a cluster-scope release: a second operator watching
    # every namespace would reconcile other tests' CompressionJobs.
    name = f"kd-cs-{uuid.uuid4().hex[:6]}"
    rendered = helm(
        helm_bin,
        "template",
        name,
        str(CHART),
        "--namespace",
        release.namespace,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ).stdout
    kubectl("apply", "-f", "-", stdin=rendered)
    cluster_rel = Release(
        name, release.namespace, release.jobs_namespace, f"{name}-kondense", release.workdir, "", {}
    )
    try:
        for verb, resource in NEEDED:
            assert sa_can(cluster_rel, verb, resource, None), f"cannot {verb} {resource}"
            assert sa_can(cluster_rel, verb, resource, "default"), f"cannot {verb} {resource}"
        for verb, resource in FORBIDDEN:
            for ns in ("default", "kube-system", None):
                assert not sa_can(cluster_rel, verb, resource, ns), f"may {verb} {resource} {ns}"
    finally:
        kubectl("delete", "-f", "-", "--wait=false", stdin=rendered, check=False)


def test_upgrade_with_new_pool_values_moves_the_next_job(helm_bin: Path, release: Release) -> None:
    # Re-point the cpu pool at the GPU node (with its toleration): the next INT8 job lands there.
    values = {
        **release.values,
        "pools": {
            "cpu": {
                **release.values["pools"]["cpu"],
                "nodeSelector": {"kondense.dev/pool": "gpu"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
            }
        },
    }
    path = release.workdir / "upgrade-values.yaml"
    path.write_text(yaml.safe_dump(values))
    helm_k(
        helm_bin,
        "upgrade",
        release.name,
        str(CHART),
        "--namespace",
        release.namespace,
        "-f",
        str(path),
        "--wait",
        "--timeout",
        "180s",
    )
    config = get("configmap", f"{release.service_account}-config", "-n", release.namespace)
    assert yaml.safe_load(config["data"]["config.yaml"])["pools"]["cpu"]["nodeSelector"] == {
        "kondense.dev/pool": "gpu"
    }
    apply_int8_job(release, "int8-after-upgrade")
    wait_ready(release, "int8-after-upgrade")
    assert runner_nodes(release, "int8-after-upgrade") == {"gpu-0"}


def test_uninstall_leaves_no_operator_objects_but_keeps_the_crd(
    helm_bin: Path, release: Release
) -> None:
    helm_k(helm_bin, "uninstall", release.name, "--namespace", release.namespace, "--wait")
    selector = f"app.kubernetes.io/instance={release.name}"
    for ns in (release.namespace, release.jobs_namespace):
        kinds = "deployments,replicasets,serviceaccounts,configmaps,services,roles,rolebindings"
        left = get(kinds, "-n", ns, "-l", selector)["items"]
        assert not left, [f"{o['kind']}/{o['metadata']['name']}" for o in left]
    left = get("clusterroles,clusterrolebindings", "-l", selector)["items"]
    assert not left
    # The operator pod is gone (the Deployment's pods are garbage-collected with it).
    kubectl("wait", "--for=delete", "pod", "-n", release.namespace, "-l", selector, "--timeout=60s")
    # Helm leaves CRDs alone (documented in the chart README): jobs survive the uninstall.
    get("crd", "compressionjobs.kondense.dev")
    assert get("compressionjob", "int8-first", "-n", release.jobs_namespace)["status"]["phase"]
