"""The bad-input suite at apply time (issue #13 item 7): every manifest case of
tests/fixtures/bad_inputs.py is refused by the apiserver (schema or CEL), naming the field.
`kondense validate` refuses the same: tests/runner/test_bad_input_suite.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from fixtures.bad_inputs import SPEC_CASES, VALID
from fixtures.cluster import Cluster

pytestmark = pytest.mark.cluster

APPLIED = [(case, spec, said) for case, spec, said, _ in SPEC_CASES]


def manifest(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kondense.dev/v1alpha1",
            "kind": "CompressionJob",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


@pytest.mark.parametrize(("case", "spec", "expected"), APPLIED, ids=[c[0] for c in APPLIED])
def test_bad_manifest_is_refused_at_apply_naming_the_field(
    cluster: Cluster, crd: None, namespace: str, case: str, spec: dict[str, Any], expected: str
) -> None:
    applied = cluster.kubectl_run(
        "apply", "-n", namespace, "-f", "-", input=manifest(case, spec), check=False
    )
    assert applied.returncode != 0, f"{case} was admitted"
    assert expected in applied.stderr, applied.stderr


@pytest.mark.parametrize(
    "change",
    [
        {"storage": {"secretRef": {"name": "team-a-s3"}, "maxDownloadBytes": 1 << 30}},
        {"serviceAccountName": "team-a-irsa"},
        {"model": {"uri": "https://models.example.com/bert.onnx"}},
        {"output": {"uri": "pvc://a.b.c/out"}},  # a claim name with dots is a valid name
        {"output": {"uri": f"pvc://{'c' * 64}/out"}},  # and so is one over 63 characters
        {"nodePool": "cpu-small"},
    ],
)
def test_good_storage_settings_are_admitted(
    cluster: Cluster, crd: None, namespace: str, change: dict[str, Any]
) -> None:
    cluster.kubectl_run(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        input=manifest("good", {**VALID, **change}),
    )  # fmt: skip
