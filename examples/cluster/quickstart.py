#!/usr/bin/env python3
"""The kondense quickstart on a cluster: s3:// in, s3:// out, then the same through a pvc://.

    make quickstart                                  # the local cluster, from scratch
    .venv/bin/python examples/cluster/quickstart.py [-n NS] [--s3-image IMAGE] [--variant s3|pvc]

Each step is printed as it runs; any failure stops the script with exit status 1 and says why.

1. starts an S3 API server in the namespace (s3-server.yaml: moto's server, the image of
   images/s3-test.Dockerfile) and waits until it is Ready;
2. through `kubectl port-forward` to its Service, creates the bucket `quickstart` and uploads
   a small digits CNN and its data (`make examples/models/digits-cnn.ts` writes them);
3. creates the runner's credentials Secret (s3-credentials.yaml) and the CompressionJob
   (digits-s3.yaml: static INT8, reading s3:// and writing s3://);
4. waits until the job is Ready, prints the results from its status and downloads the
   compressed model through the port-forward, checking its size and sha256 against the status;
5. the pvc:// variant: a PersistentVolumeClaim (pvc.yaml) from the default StorageClass (or,
   when the cluster has none, on a hostPath PersistentVolume this makes on the local
   cluster), filled by a pod that downloads the model and data from the S3 server; the job
   digits-pvc.yaml reads and writes the claim; the artifact is read back by another pod.

It needs kubectl (talking to the cluster: KUBECONFIG), the kondense operator installed and
watching the namespace (`make cluster-install` on the local cluster; the Helm chart
elsewhere), an image of images/s3-test.Dockerfile the nodes can pull (--s3-image; on the local
cluster the one `make cluster-up` loaded), and boto3 here (the project's .venv has it).
Running it again replaces the jobs; the S3 server and the claim are reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent
REPO = EXAMPLES.parent
LOCAL_STATE = REPO / ".cluster" / "state.json"
LOCAL_KUBECONFIG = REPO / ".cluster" / "kubeconfig"
# Where the local cluster's nodes keep their volumes (tests/fixtures/cluster.py make_volume).
LOCAL_VOLUMES = Path(os.environ.get("KONDENSE_NODES_ROOT", "/var/lib/kondense"))
IMAGE_PLACEHOLDER = "kondense/s3-test:latest"
IMAGE_UID = 65532
BUCKET = "quickstart"
CLAIM = "quickstart-models"
S3_JOB, PVC_JOB = "quickstart-s3-int8", "quickstart-pvc-int8"
# Local file (under examples/) -> key in BUCKET and path in the claim, as the jobs name them.
INPUTS = {
    "models/digits-cnn.ts": "models/digits-cnn.ts",
    "data/digits-train.npz": "data/digits-train.npz",
    "data/digits-eval.npz": "data/digits-eval.npz",
}
# The label the local cluster's tests use to find (and delete) the volumes made for a namespace.
VOLUME_LABEL = "kondense.dev/test-namespace"
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": IMAGE_UID,
    "runAsGroup": IMAGE_UID,
    "fsGroup": IMAGE_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
# Run in the S3 server's image, in a pod with the claim mounted at /data.
LOAD_SCRIPT = """
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["S3"], region_name="us-east-1",
                  aws_access_key_id="quickstart", aws_secret_access_key="quickstart")
for key in os.environ["KEYS"].split():
    os.makedirs(os.path.dirname("/data/" + key), exist_ok=True)
    s3.download_file(os.environ["BUCKET"], key, "/data/" + key)
    print(key, os.path.getsize("/data/" + key), "bytes", flush=True)
"""


class QuickstartError(Exception):
    """A step failed; the message says which and why."""


class Quickstart:
    def __init__(self, args: argparse.Namespace) -> None:
        self.namespace: str = args.namespace
        self.kubectl_cmd = [args.kubectl] + (
            ["--kubeconfig", args.kubeconfig] if args.kubeconfig else []
        )
        self.s3_image: str = args.s3_image
        self.timeout: float = args.timeout
        self.out = Path(args.out)
        self.started = time.monotonic()
        self.artifacts: dict[str, Path] = {}

    # --- helpers ----------------------------------------------------------------------------

    def step(self, what: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {what}", flush=True)

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 120, namespaced: bool = True
    ) -> str:
        cmd = [*self.kubectl_cmd, *(["-n", self.namespace] if namespaced else []), *args]
        try:
            done = subprocess.run(
                cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise QuickstartError(
                f"kubectl {' '.join(args)} took longer than {timeout:.0f}s"
            ) from e
        if done.returncode != 0:
            raise QuickstartError(f"kubectl {' '.join(args)} failed:\n{done.stderr}{done.stdout}")
        return done.stdout

    def kubectl_bytes(self, *args: str, timeout: float = 120) -> bytes:
        cmd = [*self.kubectl_cmd, "-n", self.namespace, *args]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise QuickstartError(f"kubectl {' '.join(args)} failed:\n{done.stderr.decode()}")
        return done.stdout

    def apply(self, manifest: Path) -> None:
        text = manifest.read_text().replace(IMAGE_PLACEHOLDER, self.s3_image)
        out = self.kubectl("apply", "-f", "-", stdin=text)
        for line in out.splitlines():
            print(f"         {line}", flush=True)

    def get(self, kind: str, name: str, namespaced: bool = True) -> dict[str, Any] | None:
        out = self.kubectl(
            "get", kind, name, "-o", "json", "--ignore-not-found", namespaced=namespaced
        )
        return json.loads(out) if out.strip() else None

    @contextmanager
    def port_forward(self) -> Iterator[str]:
        """`kubectl port-forward service/quickstart-s3 :5000`; yields http://127.0.0.1:<port>."""
        cmd = [
            *self.kubectl_cmd,
            "-n",
            self.namespace,
            "port-forward",
            "service/quickstart-s3",
            ":5000",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # Forwarding from 127.0.0.1:PORT -> 5000
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not match:
                proc.kill()
                err = proc.stderr.read() if proc.stderr else ""
                raise QuickstartError(f"kubectl port-forward service/quickstart-s3: {line}{err}")
            yield f"http://127.0.0.1:{match.group(1)}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    @staticmethod
    def s3_client(endpoint: str) -> Any:
        import boto3  # the project's .venv has it

        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="quickstart",
            aws_secret_access_key="quickstart-not-a-secret",
        )

    def wait_pod(self, name: str, phase: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pod = self.get("pod", name) or {}
            now = pod.get("status", {}).get("phase")
            if now == phase:
                return
            if now == "Failed":
                break
            time.sleep(2)
        log = subprocess.run(
            [*self.kubectl_cmd, "-n", self.namespace, "logs", name, "--tail=30"],
            capture_output=True,
            text=True,
            check=False,
        )
        raise QuickstartError(
            f"pod/{name} did not reach {phase} within {timeout:.0f}s"
            f" (phase {now}):\n{log.stdout}{log.stderr}"
        )

    def wait_ready(self, name: str) -> dict[str, Any]:
        """Polls the CompressionJob until its Ready condition is True (what `kubectl wait
        --for=condition=Ready` waits for); stops at once when its Failed condition is True."""
        deadline = time.monotonic() + self.timeout
        last = ""
        while time.monotonic() < deadline:
            cj = self.get("compressionjob", name) or {}
            status = cj.get("status", {})
            conditions = {c["type"]: c for c in status.get("conditions", [])}
            seen = f"{status.get('phase')} {status.get('reason') or ''}".strip()
            if seen != last and status.get("phase"):
                self.step(f"compressionjob/{name}: {seen}")
                last = seen
            if conditions.get("Ready", {}).get("status") == "True":
                return cj
            if conditions.get("Failed", {}).get("status") == "True":
                raise QuickstartError(
                    f"compressionjob/{name} failed: {status.get('reason')}: "
                    f"{status.get('message')}\n{self.diagnose(name)}"
                )
            time.sleep(3)
        raise QuickstartError(
            f"compressionjob/{name} not Ready within {self.timeout:.0f}s\n{self.diagnose(name)}"
        )

    def diagnose(self, name: str) -> str:
        cj = self.get("compressionjob", name) or {}
        selector = f"kondense.dev/compressionjob-uid={cj.get('metadata', {}).get('uid', '')}"
        parts = []
        for args in (
            ["get", "compressionjob", name, "-o", "yaml"],
            ["get", "jobs,pods", "-l", selector, "-o", "wide"],
            ["logs", "-l", selector, "--tail=30"],
        ):
            done = subprocess.run(
                [*self.kubectl_cmd, "-n", self.namespace, *args],
                capture_output=True,
                text=True,
                check=False,
            )
            parts.append(f"$ kubectl {' '.join(args)}\n{done.stdout}{done.stderr}")
        return "\n".join(parts)

    def print_results(self, cj: dict[str, Any]) -> dict[str, Any]:
        status = cj["status"]
        results = status.get("results") or {}
        baseline, compressed = results.get("baseline", {}), results.get("compressed", {})
        metric = results.get("metricName", "metric")
        print(f"         phase {status.get('phase')} ({status.get('reason')})")
        print(f"         size ratio  {results.get('sizeRatio')}x (baseline bytes / compressed)")
        print(f"         speedup     {results.get('speedup')}x (p50 latency)")
        print(
            f"         {metric} {baseline.get('metric')} -> {compressed.get('metric')}"
            f" (drop {results.get('metricDrop')}, evaluated on {results.get('evaluationData')})"
        )
        for artifact in status.get("artifacts", []):
            name, size, uri = artifact["name"], artifact["bytes"], artifact["uri"]
            print(f"         artifact {name:20} {size:>9} B  {uri}")
        if not status.get("artifacts"):
            raise QuickstartError(f"compressionjob/{cj['metadata']['name']} lists no artifacts")
        model: dict[str, Any] = status["artifacts"][0]  # the model comes first
        return model

    def check_artifact(self, artifact: dict[str, Any], data: bytes, name: str) -> Path:
        if len(data) != artifact["bytes"]:
            raise QuickstartError(
                f"{artifact['uri']}: downloaded {len(data)} bytes, status says {artifact['bytes']}"
            )
        if artifact.get("sha256") and hashlib.sha256(data).hexdigest() != artifact["sha256"]:
            raise QuickstartError(f"{artifact['uri']}: sha256 differs from the status's")
        path: Path = self.out / name / artifact["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    # --- the steps --------------------------------------------------------------------------

    def preflight(self) -> None:
        missing = [name for name in INPUTS if not (EXAMPLES / name).is_file()]
        if missing:
            raise QuickstartError(
                f"the inputs are missing ({', '.join(missing)}): "
                "`make examples/models/digits-cnn.ts` trains the model and writes the data"
            )
        if not self.s3_image:
            raise QuickstartError(
                "no S3 server image: build images/s3-test.Dockerfile, push it where your nodes"
                " pull from, and pass --s3-image (on the local cluster `make cluster-up` does)"
            )
        self.kubectl("get", "crd", "compressionjobs.kondense.dev", namespaced=False)
        if self.get("namespace", self.namespace, namespaced=False) is None:
            raise QuickstartError(f"namespace {self.namespace} does not exist")
        self.step(
            f"cluster answers, CRD installed; namespace {self.namespace}, S3 image {self.s3_image}"
        )

    def clean(self) -> None:
        self.kubectl(
            "delete", "compressionjob", S3_JOB, PVC_JOB, "--ignore-not-found", "--wait=true"
        )
        self.kubectl(
            "delete", "pod", "quickstart-pvc-load", "quickstart-pvc-read",
            "--ignore-not-found", "--wait=true",
        )  # fmt: skip
        self.step(f"removed what a previous run left: compressionjob/{S3_JOB}, /{PVC_JOB}")

    def start_s3(self) -> None:
        self.step("S3 API server: kubectl apply -f examples/cluster/s3-server.yaml")
        self.apply(HERE / "s3-server.yaml")
        self.kubectl("rollout", "status", "deployment/quickstart-s3", "--timeout=300s", timeout=330)
        self.step("S3 API server Ready (deployment/quickstart-s3, service/quickstart-s3:5000)")

    def upload(self) -> None:
        with self.port_forward() as endpoint:
            self.step(f"kubectl port-forward service/quickstart-s3 -> {endpoint}")
            s3 = self.s3_client(endpoint)
            if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
                s3.create_bucket(Bucket=BUCKET)
            for local, key in INPUTS.items():
                s3.upload_file(str(EXAMPLES / local), BUCKET, key)
                size = (EXAMPLES / local).stat().st_size
                self.step(f"uploaded examples/{local} to s3://{BUCKET}/{key} ({size} bytes)")

    def run_s3_job(self) -> None:
        self.step("credentials: kubectl apply -f examples/cluster/s3-credentials.yaml")
        self.apply(HERE / "s3-credentials.yaml")
        self.step("job: kubectl apply -f examples/cluster/digits-s3.yaml")
        self.apply(HERE / "digits-s3.yaml")
        self.step(f"waiting: kubectl wait --for=condition=Ready compressionjob/{S3_JOB}")
        cj = self.wait_ready(S3_JOB)
        self.step(f"compressionjob/{S3_JOB} Ready; results from its status:")
        artifact = self.print_results(cj)
        bucket, key = artifact["uri"].removeprefix("s3://").split("/", 1)
        with self.port_forward() as endpoint:
            body = self.s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
        path = self.check_artifact(artifact, body, "s3")
        self.artifacts["s3"] = path
        self.step(f"downloaded {artifact['uri']} to {path} ({len(body)} bytes, as the status says)")

    def default_storage_class(self) -> str | None:
        classes = json.loads(self.kubectl("get", "storageclass", "-o", "json", namespaced=False))
        for sc in classes.get("items", []):
            annotations = sc["metadata"].get("annotations", {})
            if annotations.get("storageclass.kubernetes.io/is-default-class") == "true":
                return str(sc["metadata"]["name"])
        return None

    def local_volume(self) -> None:
        """A hostPath PersistentVolume for the claim, on the local cluster (no provisioner):
        a fresh directory every node sees (they share this machine), owned by the images'
        user, as tests/fixtures/cluster.py make_volume makes them."""
        if not LOCAL_STATE.is_file():
            raise QuickstartError(
                f"the claim {CLAIM} needs a PersistentVolume: this cluster has no default"
                " StorageClass; create one, or a PersistentVolume for the claim"
            )
        slot = json.loads(LOCAL_STATE.read_text())["slot"]
        name = f"quickstart-{self.namespace}-{uuid.uuid4().hex[:6]}"
        path = LOCAL_VOLUMES / str(slot) / "volumes" / name
        path.mkdir(parents=True)
        os.chown(path, IMAGE_UID, IMAGE_UID)
        path.chmod(0o775)
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "labels": {
                    VOLUME_LABEL: self.namespace,
                    "app.kubernetes.io/part-of": "kondense-quickstart",
                },
            },
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {"namespace": self.namespace, "name": CLAIM},
            },
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(pv), namespaced=False)
        self.step(
            f"no default StorageClass (the local cluster has no provisioner): made the hostPath"
            f" PersistentVolume {name} ({path}) for the claim"
        )

    def helper_pod(self, name: str, command: list[str], env: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/part-of": "kondense-quickstart"},
            },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": POD_SECURITY,
                "containers": [
                    {
                        "name": "main",
                        "image": self.s3_image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": command,
                        "env": [{"name": k, "value": v} for k, v in env.items()],
                        "securityContext": CONTAINER_SECURITY,
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}}],
            },
        }

    def run_pvc_job(self) -> None:
        self.step("claim: kubectl apply -f examples/cluster/pvc.yaml")
        self.apply(HERE / "pvc.yaml")
        claim = self.get("pvc", CLAIM) or {}
        if claim.get("status", {}).get("phase") != "Bound" and not claim["spec"].get(
            "storageClassName"
        ):
            default = self.default_storage_class()
            if default is None:
                self.local_volume()
        # Filled by a pod: the claim may live on any node (or in any cloud disk).
        load = self.helper_pod(
            "quickstart-pvc-load",
            ["python3", "-c", LOAD_SCRIPT],
            {
                "S3": "http://quickstart-s3:5000",
                "BUCKET": BUCKET,
                "KEYS": " ".join(INPUTS.values()),
            },
        )
        self.kubectl("apply", "-f", "-", stdin=json.dumps(load))
        self.step(
            "pod/quickstart-pvc-load: copying the model and data from the S3 server into the claim"
        )
        self.wait_pod("quickstart-pvc-load", "Succeeded", timeout=300)
        for line in self.kubectl("logs", "quickstart-pvc-load").splitlines():
            print(f"         {line}", flush=True)
        # A ReadWriteOnce claim: the runner may land on another node, so nothing else holds it.
        self.kubectl("delete", "pod", "quickstart-pvc-load", "--wait=true")
        self.step("job: kubectl apply -f examples/cluster/digits-pvc.yaml")
        self.apply(HERE / "digits-pvc.yaml")
        self.step(f"waiting: kubectl wait --for=condition=Ready compressionjob/{PVC_JOB}")
        cj = self.wait_ready(PVC_JOB)
        self.step(f"compressionjob/{PVC_JOB} Ready; results from its status:")
        artifact = self.print_results(cj)
        relative = artifact["uri"].removeprefix(f"pvc://{CLAIM}/")
        read = self.helper_pod(
            "quickstart-pvc-read", ["python3", "-c", "import time; time.sleep(600)"], {}
        )
        self.kubectl("apply", "-f", "-", stdin=json.dumps(read))
        self.wait_pod("quickstart-pvc-read", "Running", timeout=300)
        body = self.kubectl_bytes("exec", "quickstart-pvc-read", "--", "cat", f"/data/{relative}")
        self.kubectl("delete", "pod", "quickstart-pvc-read", "--wait=false")
        path = self.check_artifact(artifact, body, "pvc")
        self.artifacts["pvc"] = path
        self.step(
            f"read {artifact['uri']} back (kubectl exec in a pod with the claim) to {path}"
            f" ({len(body)} bytes, as the status says)"
        )

    def run(self, variants: list[str]) -> dict[str, Path]:
        self.preflight()
        self.clean()
        self.start_s3()
        self.upload()
        if "s3" in variants:
            self.run_s3_job()
        if "pvc" in variants:
            self.run_pvc_job()
        self.step(f"quickstart done: {', '.join(str(p) for p in self.artifacts.values())}")
        return self.artifacts


def local_s3_image() -> str:
    """The S3 server image the local cluster was loaded with (`make cluster-up`), if any."""
    if not LOCAL_STATE.is_file():
        return ""
    image: str = json.loads(LOCAL_STATE.read_text()).get("images", {}).get("s3-test", "")
    return image


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="where everything goes; the operator must watch it (default: default)",
    )
    parser.add_argument(
        "--s3-image",
        default=os.environ.get("QUICKSTART_S3_IMAGE") or local_s3_image(),
        help="an image of images/s3-test.Dockerfile your nodes can pull"
        " (default: the local cluster's)",
    )
    parser.add_argument("--variant", choices=["s3", "pvc", "both"], default="both")
    parser.add_argument("--kubectl", default="kubectl", help="kubectl to run (default: on PATH)")
    parser.add_argument("--kubeconfig", default=None, help="default: KUBECONFIG or ~/.kube/config")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per job")
    parser.add_argument(
        "--out", default=str(REPO / "out" / "quickstart"), help="where the artifacts go"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Runs the quickstart; returns the downloaded artifacts by variant, raises QuickstartError."""
    args = parse_args(argv)
    variants = ["s3", "pvc"] if args.variant == "both" else [args.variant]
    return Quickstart(args).run(variants)


if __name__ == "__main__":
    try:
        main()
    except QuickstartError as e:
        sys.exit(f"quickstart failed: {e}")
