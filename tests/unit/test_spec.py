"""The spec models: the manifest shape from the docs parses, and users' mistakes are named."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kondense.api.spec import CompressionJob, QuantizeConfig, QuantizeMode

MANIFEST = """
apiVersion: kondense.dev/v1alpha1
kind: CompressionJob
metadata: {name: minilm-int8}
spec:
  model:
    uri: file:///models/minilm
    format: huggingface
    task: text-embedding
    inputs: [{name: pixel_values, shape: [1, 3, 224, 224], dtype: float32}]
  data:
    calibration: {uri: s3://bucket/calib.npz, samples: 300}
    evaluation: {uri: s3://bucket/eval.npz, samples: 500}
  steps:
    - export: {opset: 17}
    - optimize: {level: all, transformer: auto}
    - quantize: {mode: dynamic}
  evaluation: {metric: auto, maxMetricDrop: 0.01}
  output: {uri: file:///tmp/out}
"""


def manifest(**spec_changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load(MANIFEST)
    doc["spec"].update(spec_changes)
    return doc


def error_text(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        CompressionJob.model_validate(doc)
    return str(caught.value)


def test_documented_manifest_parses_with_camel_case_fields() -> None:
    job = CompressionJob.model_validate(manifest())
    assert job.name == "minilm-int8"
    assert [step.name for step in job.spec.steps] == ["export", "optimize", "quantize"]
    quantize = job.spec.steps[2].config
    assert isinstance(quantize, QuantizeConfig) and quantize.mode is QuantizeMode.dynamic
    assert quantize.per_channel is True
    assert job.spec.evaluation.max_metric_drop == 0.01
    assert job.spec.data.calibration is not None and job.spec.data.calibration.samples == 300


def test_unknown_field_is_refused_by_name() -> None:
    doc = manifest(evaluation={"maxMetricDrp": 0.01})
    assert "maxMetricDrp" in error_text(doc)


def test_step_with_two_keys_is_refused() -> None:
    doc = manifest(steps=[{"export": {}, "quantize": {"mode": "dynamic"}}])
    assert "exactly one of" in error_text(doc)


def test_static_int8_without_calibration_data_names_the_field() -> None:
    doc = manifest(data={}, steps=[{"quantize": {"mode": "static"}}])
    assert "spec.data.calibration" in error_text(doc)


def test_node_pool_is_a_name_the_spec_does_not_judge() -> None:
    # Which pools have a GPU is the operator's configuration (kondense.operator.pools refuses
    # fp16 on a CPU-only pool with PoolLacksDevice); the spec accepts any pool name.
    for pool in ("cpu", "cpu-small", "a100"):
        doc = manifest(nodePool=pool, steps=[{"quantize": {"mode": "fp16"}}])
        assert CompressionJob.model_validate(doc).spec.node_pool == pool


def test_distillation_without_training_data_is_refused() -> None:
    doc = manifest(steps=[{"distill": {}}])
    assert "spec.data.training" in error_text(doc)


def test_prune_amount_of_one_is_out_of_range() -> None:
    doc = manifest(steps=[{"prune": {"amount": 1.0}}])
    assert "amount" in error_text(doc)


def test_wrong_api_version_is_refused() -> None:
    doc = manifest()
    doc["apiVersion"] = "kondense.dev/v1"
    assert "apiVersion must be kondense.dev/v1alpha1" in error_text(doc)


def test_exponent_numbers_read_as_numbers_as_kubectl_reads_them() -> None:
    from kondense.api.manifest import load_manifest_text

    # PyYAML's YAML 1.1 rules make `1e-5` (no dot) a string; kubectl and YAML 1.2 a number.
    document = load_manifest_text("lr: 1e-5\nbig: 2E+3\nquoted: '1e-5'\nword: e5\n", "m.yaml")
    assert document == {"lr": 1e-5, "big": 2000.0, "quoted": "1e-5", "word": "e5"}
