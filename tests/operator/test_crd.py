"""The CRD is generated from the spec models, structural, and checked in unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kondense.operator.crd import build_crd, render_crd, spec_schema, structural_schema

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
    assert quantize["properties"]["mode"]["enum"] == ["dynamic", "static", "fp16"]
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
    assert any(m.startswith("spec.nodePool:") for m in messages)
    assert any(m.startswith("spec.data.training:") for m in messages)
    step_rule = spec["properties"]["steps"]["items"]["x-kubernetes-validations"][0]
    assert "exactly one of" in step_rule["message"]


def test_status_subresource_printer_columns_and_short_name() -> None:
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Recipe": ".status.recipe",
        "Pool": ".status.runner.pool",
        "Size-Ratio": ".status.results.sizeRatio",
        "Speedup": ".status.results.speedup",
        "Metric-Drop": ".status.results.metricDrop",
        "Age": ".metadata.creationTimestamp",
    }
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"observedGeneration", "phase", "conditions", "runner", "results", "artifacts"} <= set(
        status
    )
    assert "cj" in build_crd()["spec"]["names"]["shortNames"]
