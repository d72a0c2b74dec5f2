"""The CompressionSearch CRD: generated from api/search.py, structural, checked in unchanged,
its CEL rules worded as the local check words them, and enforced by the real apiserver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.cluster import Cluster
from pydantic import ValidationError

from kondense.api.search import CompressionSearchSpec
from kondense.api.search_crd import SEARCH_RULES, build_search_crd, render_search_crd

REPO = Path(__file__).resolve().parents[2]

VALID: dict[str, Any] = {
    "model": {"uri": "s3://models/bert", "format": "huggingface", "task": "text-embedding"},
    "output": {"uri": "s3://out/bert-search"},
}
# One spec per CEL rule of the search, keyed by its message's prefix.
BREAKS_RULE: dict[str, dict[str, Any]] = {
    "spec.space.quantize.modes:": {"space": {"quantize": {"modes": ["static"]}}},
    "spec.space.distill:": {"space": {"distill": {"keepEvery": [2]}}},
}


def test_checked_in_search_crd_matches_the_generator() -> None:
    checked_in = (REPO / "crds" / "compressionsearch.yaml").read_text(encoding="utf-8")
    assert checked_in == render_search_crd(), "crds/compressionsearch.yaml is stale: run `make crd`"


def test_search_schema_is_structural() -> None:
    text = json.dumps(build_search_crd())
    for forbidden in ('"$ref"', '"anyOf"', '"oneOf"', '"additionalProperties"', '"null"'):
        assert forbidden not in text


@pytest.mark.parametrize("rule", SEARCH_RULES, ids=lambda r: r["message"][:30])
def test_the_local_check_refuses_what_each_cel_rule_refuses_in_its_words(
    rule: dict[str, str],
) -> None:
    prefix = next((p for p in BREAKS_RULE if rule["message"].startswith(p)), None)
    assert prefix is not None, f"no local twin tested for the CEL rule: {rule['message']}"
    with pytest.raises(ValidationError) as refused:
        CompressionSearchSpec.model_validate({**VALID, **BREAKS_RULE[prefix]})
    assert rule["message"] in str(refused.value)


def test_printer_columns_tell_the_search_s_story() -> None:
    version = build_search_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Best": ".status.best.name",
        "Speedup": ".status.best.speedup",
        "Size-Ratio": ".status.best.sizeRatio",
        "Metric-Drop": ".status.best.metricDrop",
        "Done": ".status.candidatesDone",
        "Candidates": ".status.candidatesTotal",
        "Age": ".metadata.creationTimestamp",
        "Message": ".status.message",
    }


def _manifest(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kondense.dev/v1alpha1",
            "kind": "CompressionSearch",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


@pytest.mark.cluster
@pytest.mark.parametrize("prefix", list(BREAKS_RULE))
def test_the_apiserver_refuses_a_space_that_breaks_a_rule(
    cluster: Cluster, crd: None, namespace: str, prefix: str
) -> None:
    manifest = _manifest("broken", namespace, {**VALID, **BREAKS_RULE[prefix]})
    applied = cluster.kubectl_run("apply", "-f", "-", input=manifest, check=False)
    assert applied.returncode != 0, f"{prefix} was admitted"
    assert prefix in applied.stderr, applied.stderr


@pytest.mark.cluster
def test_the_apiserver_admits_a_valid_search_and_defaults_it(
    cluster: Cluster, crd: None, namespace: str
) -> None:
    spec = {
        **VALID,
        "data": {"calibration": {"uri": "s3://d/calib.npz"}},
        "space": {"quantize": {"modes": ["dynamic", "static"]}},
        "budget": {"parallelism": 2},
    }
    applied = cluster.kubectl_run(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input=_manifest("ok", namespace, spec)
    )
    admitted = json.loads(applied.stdout)
    assert admitted["spec"]["budget"]["maxCandidates"] == 8
    CompressionSearchSpec.model_validate(admitted["spec"])  # the defaults agree with the models


@pytest.mark.cluster
def test_the_apiserver_refuses_a_name_too_long_to_label_the_children(
    cluster: Cluster, crd: None, namespace: str
) -> None:
    applied = cluster.kubectl_run(
        "apply", "-f", "-", input=_manifest("s" * 64, namespace, VALID), check=False
    )
    assert applied.returncode != 0
    assert "metadata.name: a CompressionSearch's name labels its children" in applied.stderr


@pytest.mark.cluster
def test_only_the_budget_of_a_created_search_can_change(
    cluster: Cluster, crd: None, namespace: str
) -> None:
    """A changed model, space or evaluation would mix two searches under one best."""
    cluster.kubectl_run("apply", "-f", "-", input=_manifest("fixed", namespace, VALID))

    def patch(spec: dict[str, Any]) -> Any:
        body = json.dumps({"spec": spec})
        return cluster.kubectl_run(
            "-n", namespace, "patch", "compressionsearch", "fixed", "--type=merge", "-p", body,
            check=False,
        )  # fmt: skip

    moved = patch({"model": {"uri": "s3://models/other"}})
    assert moved.returncode != 0, "spec.model changed"
    assert "spec.model cannot change once the search is created" in moved.stderr, moved.stderr
    added = patch({"space": {"quantize": {"modes": ["dynamic"]}}})
    assert added.returncode != 0, "spec.space was added"
    assert "spec: fields other than budget cannot be added or removed" in added.stderr
    raised = patch({"budget": {"parallelism": 3, "timeoutSeconds": 7200}})
    assert raised.returncode == 0, raised.stderr
    unchanged = cluster.kubectl_run("apply", "-f", "-", input=_manifest("fixed", namespace, VALID))
    assert unchanged.returncode == 0, "re-applying the same spec is no change"
