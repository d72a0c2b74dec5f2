"""examples/cluster/quickstart.py, as `make quickstart` runs it, on the local cluster.

The operator is the tests' own (tests/fixtures/operator_cluster.py), watching a fresh
namespace enforcing the restricted Pod Security Standard: the quickstart's S3 server, its
Secret, both CompressionJobs, the claim (on a hostPath PersistentVolume: the local cluster has
no default StorageClass) and the pods that fill and read it all go there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]


def load_quickstart() -> Any:
    path = REPO / "examples" / "cluster" / "quickstart.py"
    spec = importlib.util.spec_from_file_location("quickstart", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.cluster
@pytest.mark.slow
def test_quickstart_s3_and_pvc(cluster: Cluster, kop_namespace: str, tmp_path: Path) -> None:
    quickstart = load_quickstart()
    if not (REPO / "examples" / "models" / "digits-cnn.ts").is_file():
        # What `make examples/models/digits-cnn.ts` runs: the quickstart's model and data.
        subprocess.run(
            [sys.executable, str(REPO / "examples" / "data" / "make_digits.py"), "examples"],
            cwd=REPO,
            check=True,
            timeout=600,
        )
    argv = [
        "--namespace", kop_namespace,
        "--kubectl", str(cluster.kubectl),
        "--kubeconfig", str(cluster.kubeconfig),
        "--s3-image", cluster.image("s3-test"),
        "--timeout", "300",
        "--out", str(tmp_path),
    ]  # fmt: skip
    try:
        artifacts = quickstart.main(argv)
    finally:
        cluster.delete_volumes(kop_namespace)
    assert set(artifacts) == {"s3", "pvc"}
    for variant, path in artifacts.items():
        cj = json.loads(
            cluster.kubectl_run(
                "get", "-n", kop_namespace, "compressionjob",
                f"quickstart-{variant}-int8", "-o", "json",
            ).stdout
        )  # fmt: skip
        model = cj["status"]["artifacts"][0]
        assert path.name == model["name"] == "model.onnx"
        data = path.read_bytes()
        assert len(data) == model["bytes"] > 0
        assert hashlib.sha256(data).hexdigest() == model["sha256"]
        assert cj["status"]["results"]["sizeRatio"] > 1
