"""The CRD is generated from the spec models, structural, and checked in unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kondense.api.crd import (
    OUTPUT_RULES,
    SPEC_RULES,
    build_crd,
    render_crd,
    spec_schema,
    structural_schema,
)
from kondense.api.spec import CompressionJobSpec

REPO = Path(__file__).resolve().parents[2]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, f"{path}[{i}]")
    return found


def test_checked_in_crd_matches_the_generator() -> None:
    checked_in = (REPO / "crds" / "compressionjob.yaml").read_text(encoding="utf-8")
    assert checked_in == render_crd(), (
        "crds/compressionjob.yaml is stale: run `kondense crd -o crds/compressionjob.yaml` "
        "(and `make chart-sync-crd`)"
    )


def test_schema_is_structural_without_refs_or_unions() -> None:
    text = json.dumps(build_crd())
    for forbidden in ('"$ref"', '"anyOf"', '"oneOf"', '"additionalProperties"', '"null"'):
        assert forbidden not in text
    for where, node in _walk(build_crd()["spec"]["versions"][0]["schema"]):
        if "properties" in node or "items" in node:
            assert node.get("type") in ("object", "array"), where


def test_explain_text_and_bounds_come_from_the_models() -> None:
    spec = spec_schema()
    quantize = spec["properties"]["steps"]["items"]["properties"]["quantize"]
    assert quantize["properties"]["mode"]["enum"] == ["auto", "dynamic", "static", "fp16"]
    assert quantize["properties"]["mode"]["default"] == "auto"
    assert "calibrated on spec.data.calibration" in quantize["properties"]["mode"]["description"]
    amount = spec["properties"]["steps"]["items"]["properties"]["prune"]["properties"]["amount"]
    assert amount["minimum"] == 0 and amount["maximum"] == 1 and amount["exclusiveMaximum"]
    assert spec["properties"]["timeoutSeconds"]["minimum"] == 60
    assert spec["required"] == ["model", "steps", "output"]


def test_exclusive_bounds_use_the_openapi_3_0_form() -> None:
    converted = structural_schema({"type": "number", "exclusiveMinimum": 0})
    assert converted == {"type": "number", "minimum": 0, "exclusiveMinimum": True}


def test_cross_field_rules_are_cel_with_messages_naming_the_field() -> None:
    spec = spec_schema()
    messages = [rule["message"] for rule in spec["x-kubernetes-validations"]]
    assert any(m.startswith("spec.data.calibration:") for m in messages)
    # Pool names are the operator's configuration: no rule may hard-code one.
    assert not [r for r in spec["x-kubernetes-validations"] if "nodePool" in r["rule"]]
    assert any(m.startswith("spec.data.training:") for m in messages)
    step_rule = spec["properties"]["steps"]["items"]["x-kubernetes-validations"][0]
    assert "exactly one of" in step_rule["message"]


VALID: dict[str, Any] = {
    "model": {"uri": "s3://models/bert"},
    "steps": [{"quantize": {"mode": "dynamic"}}],
    "output": {"uri": "s3://out/bert"},
}
# One manifest per cross-field rule, keyed by the rule's message prefix.
BREAKS_RULE: dict[str, dict[str, Any]] = {
    "spec.data.calibration:": {"steps": [{"quantize": {"mode": "static"}}]},
    "spec.data.training:": {"steps": [{"distill": {}}]},
    "spec.steps[].maxTrainSeconds:": {
        "steps": [{"prune": {"amount": 0.5, "fineTune": {"maxTrainSeconds": 600}}}],
        "data": {"training": {"uri": "s3://d/train.npz"}},
        "timeoutSeconds": 600,
    },
    "spec.output.uri:": {"output": {"uri": "https://example.com/out"}},
}


@pytest.mark.parametrize("rule", [*SPEC_RULES, *OUTPUT_RULES], ids=lambda r: r["message"][:30])
def test_kondense_validate_refuses_what_each_cel_rule_refuses_in_its_words(
    rule: dict[str, str],
) -> None:
    prefix = next((p for p in BREAKS_RULE if rule["message"].startswith(p)), None)
    assert prefix is not None, f"no local twin tested for the CEL rule: {rule['message']}"
    with pytest.raises(ValidationError) as refused:
        CompressionJobSpec.model_validate({**VALID, **BREAKS_RULE[prefix]})
    assert rule["message"] in str(refused.value)


@pytest.mark.parametrize(
    "uri", ["s3://bucket/prefix", "pvc://claim/out", "file:///abs/out", "/abs/out", "rel/out"]
)
def test_writable_output_uris_pass_locally(uri: str) -> None:
    CompressionJobSpec.model_validate({**VALID, "output": {"uri": uri}})


def test_status_subresource_printer_columns_and_short_name() -> None:
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Reason": ".status.reason",
        "Recipe": ".status.recipe",
        "Pool": ".status.runner.pool",
        "Size-Ratio": ".status.results.sizeRatio",
        "Speedup": ".status.results.speedup",
        "Metric-Drop": ".status.results.metricDrop",
        "Evaluated-On": ".status.results.evaluationData",
        "Age": ".metadata.creationTimestamp",
        "Message": ".status.message",
    }
    wide_only = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert wide_only == ["Message"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"observedGeneration", "phase", "conditions", "runner", "results", "artifacts"} <= set(
        status
    )
    names = build_crd()["spec"]["names"]
    # `cj` would clash with CronJob's short name; `kcj` and the category stay.
    assert names["shortNames"] == ["kcj"] and names["categories"] == ["kondense"]
