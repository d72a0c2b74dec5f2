"""`make cluster-install`: the Helm chart on the local cluster, with the images built here.

After `make cluster-up` (which builds the images with podman and pushes them to the cluster's
registry), this:

1. checks the cluster answers and its registry has the operator and runner-cpu images the
   cluster was loaded with;
2. applies crds/ itself, and installs the chart with crds.enabled=false: the local cluster's CRD
   is shared by every release on it and by the test suite, so no one release owns it (the
   chart README's "installing the CRD separately");
3. creates the release namespace (default kondense-system) enforcing the restricted Pod
   Security Standard;
4. runs `helm upgrade --install` (so a second run upgrades in place) with
   charts/kondense/ci/local-values.yaml, a values file naming the images the cluster was
   loaded with (.cluster/state.json) and crds.enabled=false, written to build/cluster-install/,
   and any extra `-f` files, with `--wait`;
5. waits until the operator Deployment is Available (`kubectl rollout status`): its pod's
   readiness probe passed on the node's kubelet;
6. uploads the example's model and data (examples/cluster-digits-static-int8.yaml) to the
   cluster's S3 server and prints how to apply it.

The Helm is the pinned one the chart tests build (tests/chart/go/build.sh). The chart tests run
this script for their own release (--release, --namespace, -f).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "kondense"
LOCAL_VALUES = CHART / "ci" / "local-values.yaml"
STATE = REPO / ".cluster" / "state.json"
KUBECONFIG = REPO / ".cluster" / "kubeconfig"
KUBECTL = REPO / ".cluster" / "bin" / "kubectl"
HELM_BUILD = REPO / "tests" / "chart" / "go" / "build.sh"
CRDS = REPO / "crds"  # CompressionJob and CompressionSearch
EXAMPLE = REPO / "examples" / "cluster-digits-static-int8.yaml"
EXAMPLE_BUCKET = "kondense-examples"
# Local file (relative to examples/) -> key in EXAMPLE_BUCKET, as the example's URIs name them.
EXAMPLE_FILES = {
    "models/digits-cnn.ts": "models/digits-cnn.ts",
    "data/digits-train.npz": "data/digits-train.npz",
    "data/digits-eval.npz": "data/digits-eval.npz",
}
RESTRICTED = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


class InstallError(Exception):
    """Something the user must fix; the message says what."""


def cluster_state() -> dict[str, Any]:
    if not STATE.is_file() or not KUBECONFIG.is_file():
        raise InstallError(
            "no local cluster (.cluster/state.json is missing): run `make cluster-up`"
        )
    state: dict[str, Any] = json.loads(STATE.read_text())
    return state


def cluster_images(state: dict[str, Any]) -> dict[str, str]:
    """The operator and runner-cpu images the cluster was loaded with, by full name (e.g.
    10.200.0.1:5000/kondense/operator:<hash>): `make cluster-up` builds them, pushes them to the
    cluster's registry and pulls them onto every node, and records them in .cluster/state.json
    (the tests' `cluster.image(name)` reads the same)."""
    loaded = state.get("images") or {}
    missing = [name for name in ("operator", "runner-cpu") if name not in loaded]
    if missing:
        raise InstallError(
            f"the cluster was not loaded with the {' and '.join(missing)} image: run"
            " `make cluster-up` (it builds the images and loads them into a running cluster)"
        )
    return {name: str(loaded[name]) for name in ("operator", "runner-cpu")}


def images_values(images: dict[str, str]) -> dict[str, Any]:
    """The chart values naming the cluster's images.

    The gpu pool runs runner-cpu too: runner-gpu's CUDA base can't be pulled here
    (charts/kondense/ci/local-values.yaml says more)."""
    repository, tag = images["operator"].rsplit(":", 1)
    runner = images["runner-cpu"]
    return {
        "image": {"repository": repository, "tag": tag},
        "pools": {"cpu": {"image": runner}, "gpu": {"image": runner}},
    }


def check_registry(state: dict[str, Any], images: dict[str, str]) -> None:
    """Each image is in the cluster's registry (else pods would sit in ImagePullBackOff)."""
    for image in images.values():
        repo, tag = image.removeprefix(f"{state['imageRegistry']}/").rsplit(":", 1)
        url = f"http://{state['registry']}/v2/{repo}/manifests/{tag}"
        request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_TYPES})
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except (urllib.error.URLError, OSError) as e:
            raise InstallError(
                f"the cluster's registry does not serve {image} ({e}): run `make cluster-up`"
                " (it pushes the images it loads)"
            ) from e


def run(*cmd: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False
    )


def kubectl(*args: str, stdin: str | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(KUBECONFIG), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise InstallError(f"kubectl {' '.join(args)} failed:\n{done.stderr}{done.stdout}")
    return done.stdout


def helm_binary() -> Path:
    done = run(HELM_BUILD, timeout=1800)
    if done.returncode != 0:
        raise InstallError(f"building Helm failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def diagnose(namespace: str, release: str) -> str:
    """What the operator pod is doing, for an install that did not become Available."""
    selector = f"app.kubernetes.io/instance={release}"
    parts = []
    for args in (
        ("get", "pods", "-n", namespace, "-l", selector, "-o", "wide"),
        ("describe", "pods", "-n", namespace, "-l", selector),
        ("logs", "-n", namespace, "-l", selector, "--tail=40", "--all-containers"),
    ):
        done = run(KUBECTL, "--kubeconfig", KUBECONFIG, *args, timeout=60)
        parts.append(f"$ kubectl {' '.join(args)}\n{done.stdout}{done.stderr}")
    return "\n".join(parts)


def upload_example(state: dict[str, Any]) -> None:
    import boto3

    folder = REPO / "examples"
    missing = [name for name in EXAMPLE_FILES if not (folder / name).is_file()]
    if missing:
        raise InstallError(
            f"the example's inputs are missing ({', '.join(missing)}): "
            "`make examples/models/digits-cnn.ts` writes them"
        )
    s3 = boto3.client(
        "s3",
        endpoint_url=state["s3"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if EXAMPLE_BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=EXAMPLE_BUCKET)
    for name, key in EXAMPLE_FILES.items():
        s3.upload_file(str(folder / name), EXAMPLE_BUCKET, key)


def install(args: argparse.Namespace) -> None:
    started = time.monotonic()

    def step(what: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {what}", flush=True)

    state = cluster_state()
    kubectl("get", "--raw", "/readyz")
    images = cluster_images(state)
    check_registry(state, images)
    helm = helm_binary()
    step(f"cluster, images and Helm ready ({helm})")

    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", "crd/compressionjobs.kondense.dev")
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": args.namespace, "labels": RESTRICTED},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(ns))
    step(f"CRDs applied, namespace {args.namespace} (Pod Security: restricted)")

    generated = REPO / "build" / "cluster-install" / f"{args.release}-images.yaml"
    generated.parent.mkdir(parents=True, exist_ok=True)
    values = images_values(images)
    generated.write_text(
        "# Written by scripts/cluster-install.py: the images in .cluster/state.json, and the\n"
        "# CRDs left to the script (applied above from crds/, shared by every release here).\n"
        + yaml.safe_dump({**values, "crds": {"enabled": False}}, sort_keys=False)
    )
    extra = [a for f in args.values for a in ("-f", str(Path(f).resolve()))]
    cmd = [
        str(helm),
        "--kubeconfig",
        str(KUBECONFIG),
        "upgrade",
        "--install",
        args.release,
        str(CHART),
        "--namespace",
        args.namespace,
        "-f",
        str(LOCAL_VALUES),
        "-f",
        str(generated),
        *extra,
        "--wait",
        "--timeout",
        f"{args.timeout}s",
    ]
    done = run(*cmd, timeout=args.timeout + 60)
    if done.returncode != 0:
        raise InstallError(
            f"helm upgrade --install failed:\n{done.stderr}{done.stdout}\n"
            + diagnose(args.namespace, args.release)
        )
    print(done.stdout, flush=True)
    step(f"helm upgrade --install {args.release} (operator {values['image']['tag']})")

    deployment = get_deployment_name(args)
    rollout = run(
        KUBECTL,
        "--kubeconfig",
        KUBECONFIG,
        "rollout",
        "status",
        "-n",
        args.namespace,
        f"deployment/{deployment}",
        f"--timeout={args.timeout}s",
        timeout=args.timeout + 30,
    )
    if rollout.returncode != 0:
        raise InstallError(
            f"deployment/{deployment} did not become Available:\n{rollout.stderr}\n"
            + diagnose(args.namespace, args.release)
        )
    kubectl("wait", "-n", args.namespace, "--for=condition=Available", f"deployment/{deployment}")
    step(f"deployment/{deployment} Available (its pod passed its readiness probe)")

    if args.example:
        upload_example(state)
        step(f"example inputs uploaded to s3://{EXAMPLE_BUCKET}/ on the cluster's S3 server")
        print_first_job(args.namespace, deployment)


def get_deployment_name(args: argparse.Namespace) -> str:
    """The chart's Deployment of this release (named by the chart's fullname rule)."""
    out = kubectl(
        "get",
        "deployments",
        "-n",
        args.namespace,
        "-l",
        f"app.kubernetes.io/instance={args.release},app.kubernetes.io/component=operator",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ).split()
    if len(out) != 1:
        raise InstallError(f"expected one operator Deployment of release {args.release}: {out}")
    return out[0]


def print_first_job(namespace: str, deployment: str) -> None:
    example = EXAMPLE.relative_to(REPO)
    print(
        f"""
The operator is running. A first job (static INT8 of a small digits CNN; its model and data
are in s3://{EXAMPLE_BUCKET}/ on the cluster's S3 server, which the pools' env points at):

  export KUBECONFIG=$PWD/.cluster/kubeconfig PATH=$PWD/.cluster/bin:$PATH
  kubectl apply -f {example}
  kubectl wait --for=condition=Ready compressionjob/digits-static-int8 --timeout=15m
  kubectl get compressionjobs -o wide
  kubectl get pods -o wide                           # the runner pod, on cpu-0 or cpu-1
  kubectl -n {namespace} logs deploy/{deployment}   # the operator

Jobs go to the namespaces the operator watches ({LOCAL_VALUES.relative_to(REPO)}:
watchNamespaces). Run `make cluster-install` again after `make cluster-up` rebuilt the
images: it upgrades the release in place.""",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="kondense", help="Helm release name")
    parser.add_argument("--namespace", default="kondense-system", help="the release namespace")
    parser.add_argument(
        "-f",
        "--values",
        action="append",
        default=[],
        help="more values files, after ci/local-values.yaml and the images (repeatable)",
    )
    parser.add_argument("--timeout", type=int, default=300, help="seconds to wait for the operator")
    parser.add_argument(
        "--no-example",
        dest="example",
        action="store_false",
        help="skip uploading the example's inputs and the first-job instructions",
    )
    args = parser.parse_args()
    try:
        install(args)
    except InstallError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
