"""The chart on the local cluster's real nodes: server-side dry runs of every values combination,
and a release installed by `make cluster-install`'s script (scripts/cluster-install.py) whose
operator runs as a pod of the locally built operator image, probed by the kubelet, scraped
through its Service, under the chart's ServiceAccount and RBAC, in namespaces enforcing the
restricted Pod Security Standard; its runner pods pull the runner-cpu image and read their model
from the cluster's S3 server.

One release serves the install / job / upgrade / uninstall tests (in that order): installing is
the slow part, and the order is the life of a release. It watches only its own jobs namespace
(namespaced RBAC), so it never touches CompressionJobs of tests running alongside it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.helm import CHART, helm, values_args
from fixtures.models import build_tiny_onnx

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
KUBECONFIG = REPO / ".cluster" / "kubeconfig"
KUBECTL = REPO / ".cluster" / "bin" / "kubectl"
CRD = REPO / "crds" / "compressionjob.yaml"
CLUSTER_INSTALL = REPO / "scripts" / "cluster-install.py"
LOCAL_VALUES = CHART / "ci" / "local-values.yaml"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
INSTALL_S = 300  # cluster-install's own wait for the operator (a first pull of its image)
# apply -> Ready of a tiny INT8 job; includes a first pull of the runner image (6 GB) on a
# node that has none yet, a minute or more.
JOB_S = 600
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


# --- the local cluster's values (make cluster-install) -----------------------------------------


def load_cluster_install() -> Any:
    """scripts/cluster-install.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("cluster_install", CLUSTER_INSTALL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_local_values_point_the_pools_at_the_clusters_s3(cluster: Any) -> None:
    local = yaml.safe_load(LOCAL_VALUES.read_text())
    for pool in ("cpu", "gpu"):
        assert local["pools"][pool]["env"] == cluster.s3_env(), pool


def test_local_install_values_pass_server_side_dry_run(cluster: Any, helm_bin: Path) -> None:
    """make cluster-install's values as they are (watching `default`), images included."""
    install = load_cluster_install()
    images = install.images_values(install.cluster_images(install.cluster_state()))
    assert images["image"]["repository"] + ":" + images["image"]["tag"] == cluster.image("operator")
    assert images["pools"]["cpu"]["image"] == images["pools"]["gpu"]["image"]
    assert images["pools"]["cpu"]["image"] == cluster.image("runner-cpu")
    suffix = uuid.uuid4().hex[:6]
    release_ns = f"kd-local-{suffix}"
    create_namespace(release_ns, RESTRICTED)
    try:
        rendered = helm(
            helm_bin,
            "template",
            "kondense",
            str(CHART),
            "--namespace",
            release_ns,
            "-f",
            str(LOCAL_VALUES),
            "--set-json",
            f"image={json.dumps(images['image'])}",
            "--set-json",
            f"pools.cpu.image={json.dumps(images['pools']['cpu']['image'])}",
            "--set-json",
            f"pools.gpu.image={json.dumps(images['pools']['gpu']['image'])}",
        ).stdout
        done = kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
        assert "deployment.apps/kondense" in done.stdout
        config = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ConfigMap")
        pools = yaml.safe_load(config["data"]["config.yaml"])["pools"]
        assert pools["gpu"]["image"] == cluster.image("runner-cpu")
        assert pools["gpu"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    finally:
        kubectl("delete", "namespace", release_ns, "--wait=false")


# --- one release, installed for real by scripts/cluster-install.py -----------------------------


@dataclass
class Release:
    name: str
    namespace: str  # where the operator runs
    jobs_namespace: str  # the one namespace it watches
    service_account: str
    workdir: Path  # values files and the test's model, on this machine
    bucket: str  # this release's bucket on the cluster's S3 server
    install_output: str
    values: dict[str, Any]


def release_values(cluster: Any, jobs_ns: str) -> dict[str, Any]:
    """On top of ci/local-values.yaml and the images: watch only this test's jobs namespace."""
    return {
        "rbac": {"scope": "namespaced"},
        "watchNamespaces": [jobs_ns],
        "operator": {"logLevel": "debug"},
        # Runners read the model from the cluster's S3 server and write their output there.
        "pools": {"cpu": {"env": cluster.s3_env()}, "gpu": {"env": cluster.s3_env()}},
    }


def cluster_install(rel: Release, *values: Path) -> str:
    """Run make cluster-install's script for this release; its output (helm's NOTES)."""
    files = [a for path in values for a in ("-f", str(path))]
    cmd = [
        sys.executable,
        str(CLUSTER_INSTALL),
        "--release",
        rel.name,
        "--namespace",
        rel.namespace,
    ]
    done = subprocess.run(
        [*cmd, *files, "--no-example"], capture_output=True, text=True, timeout=INSTALL_S + 120
    )
    assert done.returncode == 0, f"cluster-install failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def release(
    cluster: Any, helm_bin: Path, kube: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    rel = Release(
        name=f"kd-{suffix}",
        namespace=f"kd-system-{suffix}",
        jobs_namespace=f"kd-jobs-{suffix}",
        service_account=f"kd-{suffix}-kondense",
        workdir=tmp_path_factory.mktemp("release"),
        bucket=f"kd-chart-{suffix}",
        install_output="",
        values=release_values(cluster, f"kd-jobs-{suffix}"),
    )
    # The jobs namespace first: the operator watches it from its first moment.
    create_namespace(rel.jobs_namespace, RESTRICTED)
    values = rel.workdir / "values.yaml"
    values.write_text(yaml.safe_dump(rel.values))
    try:
        rel.install_output = cluster_install(rel, values)
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


def operator_pod(rel: Release) -> dict[str, Any]:
    pods = get("pods", "-n", rel.namespace, "-l", f"app.kubernetes.io/instance={rel.name}")
    running = [
        p
        for p in pods["items"]
        if p["status"].get("phase") == "Running" and "deletionTimestamp" not in p["metadata"]
    ]
    assert len(running) == 1, f"expected one running operator pod, got {pods['items']}"
    return running[0]  # type: ignore[no-any-return]


def operator_log(rel: Release) -> str:
    """The last lines the operator wrote, as `kubectl logs` reads them from the kubelet."""
    done = kubectl(
        "logs",
        "-n",
        rel.namespace,
        "-l",
        f"app.kubernetes.io/instance={rel.name}",
        "-c",
        "operator",
        "--tail=60",
        check=False,
    )
    return done.stdout + done.stderr


def apply_int8_job(cluster: Any, rel: Release, name: str) -> None:
    model = build_tiny_onnx(rel.workdir / f"{name}.onnx")
    uri = cluster.put_s3(model, rel.bucket, f"models/{name}.onnx")
    job = {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": name, "namespace": rel.jobs_namespace},
        "spec": {
            "model": {"uri": uri, "inputs": [{"name": "x", "shape": [1, 16]}]},
            "steps": [{"quantize": {"mode": "dynamic"}}],
            # A chart test, not a benchmark: few timed runs, and a tiny MLP need not speed up.
            "evaluation": {"warmup": 1, "runs": 5, "requireSpeedup": False, "maxMetricDrop": 1},
            "output": {"uri": f"s3://{rel.bucket}/out/{name}/"},
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
        f"--timeout={JOB_S}s",
        check=False,
        timeout=JOB_S + 20,
    )
    cj = get("compressionjob", name, "-n", rel.jobs_namespace)
    if done.returncode != 0:
        status = json.dumps(cj.get("status"), indent=1)
        pods = kubectl("get", "pods", "-n", rel.jobs_namespace, "-o", "wide", check=False).stdout
        raise AssertionError(
            f"{name} not Ready: {status}\nrunner pods:\n{pods}\noperator log:\n{operator_log(rel)}"
        )
    return cj


def runner_pod(rel: Release, cj: dict[str, Any]) -> dict[str, Any]:
    """The runner pod the operator recorded in the job's status."""
    return get("pod", cj["status"]["runner"]["pod"], "-n", rel.jobs_namespace)


def registry_digest(cluster: Any, image: str) -> str:
    """The manifest digest the cluster's registry serves for `image` (from this machine)."""
    host = json.loads((REPO / ".cluster" / "state.json").read_text())["registry"]
    repository, tag = image.removeprefix(f"{cluster.registry}/").rsplit(":", 1)
    request = urllib.request.Request(
        f"http://{host}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": MANIFEST_TYPES},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.headers["Docker-Content-Digest"])


def pod_logs_of(namespace: str, pod: str) -> str:
    return kubectl("logs", "-n", namespace, pod).stdout


def test_install_prints_how_to_apply_a_first_job(release: Release) -> None:
    notes = release.install_output.split("NOTES:", 1)[1]
    assert "kind: CompressionJob" in notes and f"namespace: {release.jobs_namespace}" in notes
    # cluster-install waited for the Deployment itself, not only for helm.
    assert f"deployment/{release.service_account} Available" in release.install_output


def test_operator_runs_the_locally_built_image_as_a_pod_of_the_release(
    cluster: Any, release: Release
) -> None:
    pod = operator_pod(release)
    # A pod of the release's Deployment (through its ReplicaSet), which Helm manages.
    (owner,) = pod["metadata"]["ownerReferences"]
    replicaset = get("replicaset", owner["name"], "-n", release.namespace)
    assert replicaset["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    deployment = get(
        "deployment", replicaset["metadata"]["ownerReferences"][0]["name"], "-n", release.namespace
    )
    assert deployment["metadata"]["annotations"]["meta.helm.sh/release-name"] == release.name
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    # The image make images built, pulled from the cluster's registry and run by containerd.
    (container,) = pod["spec"]["containers"]
    assert container["image"] == cluster.image("operator")
    (status,) = pod["status"]["containerStatuses"]
    assert status["containerID"].startswith("containerd://")
    assert status["imageID"].endswith("@" + registry_digest(cluster, cluster.image("operator")))
    assert "running" in status["state"], status["state"]
    assert pod["spec"]["serviceAccountName"] == release.service_account
    node = get("node", pod["spec"]["nodeName"])
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    # The projected token the operator authenticates with (no admin kubeconfig in the pod).
    volumes = [v for v in pod["spec"]["volumes"] if "projected" in v]
    sources = [s for v in volumes for s in v["projected"]["sources"]]
    assert any("serviceAccountToken" in s for s in sources)
    # Its log, as `kubectl logs` reads it from the node's kubelet: the kubelet's own probes
    # appear in the operator's HTTP access log (a probe every 10 s).
    deadline = time.monotonic() + 60
    while "kube-probe/" not in (log := pod_logs_of(release.namespace, pod["metadata"]["name"])):
        assert time.monotonic() < deadline, f"no probe in the operator's log:\n{log[-2000:]}"
        time.sleep(5)
    assert '"GET /healthz HTTP/1.1" 200' in log, log[-2000:]


def probe_counts(node: str, namespace: str, pod: str) -> dict[tuple[str, str], float]:
    """The kubelet's prober_probe_total for one pod: (probe type, result) -> count, read
    through the apiserver's node proxy (/metrics/probes)."""
    text = kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/metrics/probes").stdout
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("prober_probe_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("namespace") == namespace and labels.get("pod") == pod:
            key = (labels["probe_type"], labels["result"])
            counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_the_kubelet_runs_the_readiness_and_liveness_probes_and_they_pass(
    release: Release,
) -> None:
    pod = operator_pod(release)
    name, node = pod["metadata"]["name"], pod["spec"]["nodeName"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container[kind]["httpGet"]
        assert probe["path"] == "/healthz" and ports[probe["port"]] == 8081, probe
    # Ready is set by the kubelet only once the readiness probe succeeded.
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True" and ready["ContainersReady"] == "True"
    # The kubelet's own count of the probes it ran. Before the operator listens, the first
    # probes after its start are refused (and counted as failed); from Ready on, every probe of
    # either kind succeeds.
    before = probe_counts(node, release.namespace, name)
    period = container["livenessProbe"]["periodSeconds"]
    deadline = time.monotonic() + 3 * period
    while True:
        after = probe_counts(node, release.namespace, name)
        grown = {
            kind for kind, result in after if after[kind, result] > before.get((kind, result), 0)
        }
        if {"Liveness", "Readiness"} <= grown or time.monotonic() > deadline:
            break
        time.sleep(2)
    for kind in ("Liveness", "Readiness"):
        assert after.get((kind, "successful"), 0) > before.get((kind, "successful"), 0), after
        assert after.get((kind, "failed"), 0) == before.get((kind, "failed"), 0), (before, after)
    # No restart: liveness never failed often enough for the kubelet to kill the operator.
    assert operator_pod(release)["status"]["containerStatuses"][0]["restartCount"] == 0


PROC_CHECK = """
import errno, os
print("uid", os.getuid(), "gid", os.getgid())
for line in open("/proc/self/status"):
    if line.startswith(("Seccomp:", "NoNewPrivs:", "CapEff:")):
        print(line.strip())
try:
    open("/written-by-test", "w")
    print("root: writable")
except OSError as e:
    print("root:", errno.errorcode[e.errno])
"""


def test_operator_pod_is_admitted_and_runs_under_restricted_pod_security(
    cluster: Any, release: Release
) -> None:
    ns = get("namespace", release.namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # The namespace really enforces it: a pod without the restricted settings is refused.
    bare = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "not-restricted"},
        "spec": {"containers": [{"name": "c", "image": cluster.image("pause")}]},
    }
    refused = kubectl(
        "create", "--dry-run=server", "-n", release.namespace, "-f", "-",
        stdin=json.dumps(bare), check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused
    # What the kernel applies inside the operator's container, seen from the container.
    pod = operator_pod(release)["metadata"]["name"]
    out = kubectl(
        "exec", "-n", release.namespace, pod, "-c", "operator", "--",
        "python3", "-c", PROC_CHECK,
    ).stdout  # fmt: skip
    assert "uid 65532 gid 65532" in out, out
    assert "Seccomp:\t2" in out or "Seccomp: 2" in out, out  # RuntimeDefault: filter mode
    assert re.search(r"NoNewPrivs:\s+1", out), out  # allowPrivilegeEscalation: false
    assert re.search(r"CapEff:\s+0+$", out, re.M), out  # capabilities: drop ALL
    assert "root: EROFS" in out, out  # readOnlyRootFilesystem


def test_compression_job_reaches_ready_through_the_installed_operator(
    cluster: Any, release: Release
) -> None:
    apply_int8_job(cluster, release, "int8-first")
    cj = wait_ready(release, "int8-first")
    status = cj["status"]
    assert status["phase"] == "Succeeded"
    assert status["runner"]["pool"] == "cpu" and status["runner"]["node"].startswith("cpu-")
    # The runner pod ran the runner-cpu image on that node, in a namespace enforcing
    # `restricted` (admission let it in), and its log is the kubelet's.
    pod = runner_pod(release, cj)
    assert pod["spec"]["containers"][0]["image"] == cluster.image("runner-cpu")
    assert pod["status"]["containerStatuses"][0]["imageID"]
    assert pod["status"]["phase"] == "Succeeded"
    assert pod_logs_of(release.jobs_namespace, pod["metadata"]["name"]).strip()
    # The artifacts are in the release's bucket, as big as the status says.
    s3 = cluster.s3()
    assert status["artifacts"]
    for artifact in status["artifacts"]:
        bucket, key = artifact["uri"].removeprefix("s3://").split("/", 1)
        assert bucket == release.bucket
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == artifact["bytes"]


SCRAPE = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
    sys.stdout.write(response.read().decode())
"""


def test_metrics_are_scraped_through_the_service_from_inside_the_cluster(
    cluster: Any, release: Release
) -> None:
    service = get("service", f"{release.service_account}-metrics", "-n", release.namespace)
    (port,) = service["spec"]["ports"]
    url = f"http://{service['metadata']['name']}.{release.namespace}.svc:{port['port']}/metrics"
    # A pod of the project's small image fetches it: cluster DNS, the Service's ClusterIP
    # (kube-proxy) and the operator pod's metrics port.
    name = f"scrape-{uuid.uuid4().hex[:6]}"
    scraper = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "scrape",
                    "image": cluster.image("operator"),
                    "command": ["python3", "-c", SCRAPE, url],
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    kubectl("apply", "-n", release.namespace, "-f", "-", stdin=json.dumps(scraper))
    try:
        kubectl(
            "wait", "-n", release.namespace, f"pod/{name}",
            "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s",
            timeout=130,
        )  # fmt: skip
        metrics = pod_logs_of(release.namespace, name)
    finally:
        kubectl("delete", "pod", name, "-n", release.namespace, "--wait=false", check=False)
    assert "# TYPE kondense_compressionjobs gauge" in metrics, metrics[:2000]
    assert "# TYPE kondense_reconcile_errors_total counter" in metrics
    # The job the previous test ran, counted by the operator behind the Service.
    succeeded = re.search(
        r'^kondense_compressionjobs\{[^}]*phase="Succeeded"[^}]*\} (\S+)', metrics, re.M
    )
    assert succeeded and float(succeeded.group(1)) >= 1, metrics[:2000]


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
    # A CompressionSearch's children are CompressionJobs the operator creates and, on the
    # search's timeout, deletes.
    ("watch", "compressionsearches.kondense.dev"),
    ("patch", "compressionsearches.kondense.dev/status"),
    ("update", "compressionsearches.kondense.dev/finalizers"),
    ("create", "compressionjobs.kondense.dev"),
    ("delete", "compressionjobs.kondense.dev"),
]
FORBIDDEN = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("create", "pods"),
    # The operator never writes a job's or a search's spec or metadata.
    ("patch", "compressionjobs.kondense.dev"),
    ("patch", "compressionsearches.kondense.dev"),
    ("delete", "compressionsearches.kondense.dev"),
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
    cluster_rel = replace(release, name=name, service_account=f"{name}-kondense")
    try:
        for verb, resource in NEEDED:
            assert sa_can(cluster_rel, verb, resource, None), f"cannot {verb} {resource}"
            assert sa_can(cluster_rel, verb, resource, "default"), f"cannot {verb} {resource}"
        for verb, resource in FORBIDDEN:
            for ns in ("default", "kube-system", None):
                assert not sa_can(cluster_rel, verb, resource, ns), f"may {verb} {resource} {ns}"
    finally:
        kubectl("delete", "-f", "-", "--wait=false", stdin=rendered, check=False)


def test_upgrade_with_new_pool_values_moves_the_next_job(
    cluster: Any, helm_bin: Path, release: Release
) -> None:
    # Re-point the cpu pool at the GPU node (with its toleration) and run make cluster-install's
    # script again: `helm upgrade --install` upgrades the release in place, the new ConfigMap
    # rolls the operator, and the next INT8 job lands on gpu-0.
    before = operator_pod(release)["metadata"]["uid"]
    upgrade = {
        "pools": {
            "cpu": {
                "nodeSelector": {"kondense.dev/pool": "gpu"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
            }
        },
    }
    path = release.workdir / "upgrade-values.yaml"
    path.write_text(yaml.safe_dump(upgrade))
    cluster_install(release, release.workdir / "values.yaml", path)
    history = json.loads(
        helm(
            helm_bin, "--kubeconfig", str(KUBECONFIG), "history", release.name,
            "--namespace", release.namespace, "-o", "json",
        ).stdout
    )  # fmt: skip
    assert [h["revision"] for h in history] == [1, 2], history
    config = get("configmap", f"{release.service_account}-config", "-n", release.namespace)
    assert yaml.safe_load(config["data"]["config.yaml"])["pools"]["cpu"]["nodeSelector"] == {
        "kondense.dev/pool": "gpu"
    }
    assert operator_pod(release)["metadata"]["uid"] != before, "the operator was not rolled"
    apply_int8_job(cluster, release, "int8-after-upgrade")
    cj = wait_ready(release, "int8-after-upgrade")
    assert cj["status"]["runner"]["node"] == "gpu-0"
    assert runner_pod(release, cj)["spec"]["nodeName"] == "gpu-0"


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
    # The CRD is not the release's (cluster-install applies it and sets crds.enabled=false):
    # jobs survive the uninstall.
    get("crd", "compressionjobs.kondense.dev")
    assert get("compressionjob", "int8-first", "-n", release.jobs_namespace)["status"]["phase"]
