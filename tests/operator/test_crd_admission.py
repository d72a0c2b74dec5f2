"""The apiserver refuses invalid CompressionJobs at apply time, naming the field to fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.cluster import Cluster

pytestmark = pytest.mark.cluster

VALID: dict[str, Any] = {
    "model": {"uri": "s3://models/bert"},
    "steps": [{"quantize": {"mode": "dynamic"}}],
    "output": {"uri": "s3://out/bert"},
}


def with_(**changes: Any) -> dict[str, Any]:
    spec = {**VALID, **changes}
    return {k: v for k, v in spec.items() if v is not None}


# (case, spec, what the apiserver's message must contain)
INVALID = [
    ("static-int8-without-calibration", with_(steps=[{"quantize": {"mode": "static"}}]),
     "spec.data.calibration: static INT8 quantization needs calibration data"),
    ("distill-without-training-data", with_(steps=[{"distill": {}}]),
     "spec.data.training: fine-tuning and distillation need training data"),
    ("fine-tune-without-training-data",
     with_(steps=[{"prune": {"amount": 0.5, "fineTune": {"epochs": 1}}}]),
     "spec.data.training"),
    ("two-keys-in-one-step", with_(steps=[{"export": {}, "quantize": {"mode": "dynamic"}}]),
     "each step sets exactly one of export, optimize, quantize, prune, distill"),
    ("empty-step", with_(steps=[{}]), "each step sets exactly one of"),
    ("no-steps", with_(steps=[]), "spec.steps"),
    ("output-missing", with_(output=None), 'spec.output: Required value'),
    ("output-uri-unwritable-scheme", with_(output={"uri": "https://example.com/out"}),
     "spec.output.uri: use s3://bucket/prefix"),
    ("prune-amount-out-of-range", with_(steps=[{"prune": {"amount": 1.5}}]),
     "spec.steps[0].prune.amount"),
    ("unknown-quantize-mode", with_(steps=[{"quantize": {"mode": "int4"}}]),
     'spec.steps[0].quantize.mode: Unsupported value: "int4"'),
    ("timeout-too-short", with_(timeoutSeconds=5), "spec.timeoutSeconds"),
    ("metric-drop-above-one", with_(evaluation={"maxMetricDrop": 2}),
     "spec.evaluation.maxMetricDrop"),
    ("training-budget-beyond-timeout",
     with_(steps=[{"prune": {"amount": 0.5, "fineTune": {"maxTrainSeconds": 7200}}}],
           data={"training": {"uri": "s3://d/train.npz"}}, timeoutSeconds=3600),
     "spec.steps[].maxTrainSeconds: the training budget must be shorter than"),
    ("misspelled-field", with_(stepz=[]), 'unknown field "spec.stepz"'),
    ("safetensors-without-architecture",
     with_(model={"uri": "s3://m/cnn.safetensors", "format": "safetensors"}),
     "spec.model.architecture: a safetensors model needs the callable that builds it"),
    ("architecture-of-an-onnx-model",
     with_(model={"uri": "s3://m/m.onnx", "format": "onnx", "architecture": "pkg.nets:build"}),
     "spec.model.architecture: only safetensors models take an architecture"),
    ("architecture-not-module-colon-function",
     with_(model={"uri": "s3://m/cnn.safetensors", "architecture": "pkg.nets.build"}),
     "spec.model.architecture: Invalid value"),
    ("student-architecture-not-module-colon-function",
     with_(steps=[{"distill": {"student": {"architecture": "pkg.nets.small"}}}],
           data={"training": {"uri": "s3://d/train.npz"}}),
     "spec.steps[0].distill.student.architecture: Invalid value"),
    # Quantities the apiserver would refuse in the runner Job (which then never starts).
    ("cpu-not-a-quantity", with_(resources={"cpu": "banana"}), "spec.resources.cpu"),
    ("memory-not-a-quantity", with_(resources={"memory": "4 GB"}), "spec.resources.memory"),
    # A claim name the apiserver would refuse in the runner Job's volume.
    ("pvc-claim-uppercase", with_(model={"uri": "pvc://Models/bert"}),
     "spec.model.uri: pvc://CLAIM/path names a PersistentVolumeClaim"),
    ("pvc-claim-too-long", with_(output={"uri": f"pvc://{'c' * 254}/out"}),
     "spec.output.uri: pvc://CLAIM/path names a PersistentVolumeClaim"),
    ("pvc-claim-of-calibration-data",
     with_(steps=[{"quantize": {"mode": "static"}}],
           data={"calibration": {"uri": "pvc://a_b/calib.npz"}}),
     "spec.data.calibration.uri: pvc://CLAIM/path names a PersistentVolumeClaim"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "spec", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_refused_at_apply_time_naming_the_field(
    cluster: Cluster, crd: None, namespace: str, case: str, spec: dict[str, Any], expected: str
) -> None:
    manifest = {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": case, "namespace": namespace},
        "spec": spec,
    }
    applied = cluster.kubectl_run("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert applied.returncode != 0, f"{case} was admitted"
    assert expected in applied.stderr, applied.stderr


def test_valid_manifest_is_admitted(cluster: Cluster, crd: None, namespace: str) -> None:
    manifest = {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "valid", "namespace": namespace},
        "spec": with_(
            steps=[{"export": {}}, {"quantize": {"mode": "static"}}],
            data={"calibration": {"uri": "s3://d/calib.npz"}},
        ),
    }
    cluster.kubectl_run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(manifest))


def test_architecture_args_of_any_shape_are_kept(
    cluster: Cluster, crd: None, namespace: str
) -> None:
    args = {"width": 32, "blocks": [2, 2], "norm": {"kind": "batch", "eps": 1e-5}}
    model = {"uri": "s3://m/cnn.safetensors", "architecture": "pkg.nets:build"}
    manifest = {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "custom-cnn", "namespace": namespace},
        "spec": with_(model={**model, "format": "safetensors", "architectureArgs": args}),
    }
    applied = cluster.kubectl_run(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(manifest)
    )
    # JSON, not YAML: PyYAML reads kubectl's `1e-05` (no dot) back as a string.
    assert json.loads(applied.stdout)["spec"]["model"]["architectureArgs"] == args


@pytest.mark.parametrize("pool", ["cpu", "cpu-small", "a100"])
def test_pool_names_are_not_judged_by_the_apiserver(
    cluster: Cluster, crd: None, namespace: str, pool: str
) -> None:
    """Pool names and what they provide are the operator's configuration, not the contract:
    fp16 on a named pool is admitted, and the operator refuses it (PoolLacksDevice) when that
    pool has no GPU (tests/operator/test_pools.py)."""
    manifest = {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": f"fp16-{pool}", "namespace": namespace},
        "spec": with_(steps=[{"quantize": {"mode": "fp16"}}], nodePool=pool),
    }
    cluster.kubectl_run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(manifest))


EXAMPLES = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")
    if "CompressionJob" in p.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_are_admitted_and_the_invalid_one_refused(
    cluster: Cluster, crd: None, namespace: str, example: Path
) -> None:
    applied = cluster.kubectl_run(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(example), check=False
    )
    if example.stem.startswith("invalid-"):
        # The error the example's header comment promises.
        promised = " ".join(
            line.removeprefix("#").strip()
            for line in example.read_text().splitlines()
            if line.startswith("#   ") and not line.startswith("#   $")
        )
        assert applied.returncode != 0
        assert " ".join(applied.stderr.split()) in promised
    else:
        assert applied.returncode == 0, applied.stderr
