"""The reconciler parses each CompressionJob's spec once; a spec that does not parse fails the
job with reason InvalidSpec and the problems in `kondense validate`'s words."""

from __future__ import annotations

from kondense.api.spec import CompressionJobSpec
from kondense.operator.reconcile import INVALID_SPEC, parse_spec


def cj(spec: dict[str, object]) -> dict[str, object]:
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": spec}


def test_a_valid_spec_becomes_the_typed_model() -> None:
    parsed = parse_spec(
        cj(
            {
                "model": {"uri": "s3://m/x.onnx"},
                "steps": [{"quantize": {"mode": "fp16"}}],
                "output": {"uri": "s3://o/"},
                "nodePool": "a100",
            }
        )
    )
    assert isinstance(parsed, CompressionJobSpec)
    assert parsed.node_pool == "a100"


def test_an_invalid_spec_gives_every_problem_by_field_path() -> None:
    problems = parse_spec(
        cj(
            {
                "model": {"uri": "s3://m/x.onnx"},
                "steps": [{"quantize": {"mode": "static"}, "prune": {"amount": 0.5}}],
                "outputt": {"uri": "s3://o/"},
            }
        )
    )
    assert isinstance(problems, str)
    lines = problems.splitlines()
    assert "spec.output: required field is missing" in lines
    assert any(line.startswith("spec.outputt: unknown field") for line in lines)
    assert any(line.startswith("spec.steps[0]: ") for line in lines)
    assert INVALID_SPEC == "InvalidSpec"


def test_resources_that_are_not_kubernetes_quantities_are_refused_by_field() -> None:
    base = {"model": {"uri": "s3://m/x.onnx"}, "steps": [{"export": {}}], "output": {"uri": "/o"}}
    problems = parse_spec(cj({**base, "resources": {"cpu": "banana", "memory": "4 GB"}}))
    assert isinstance(problems, str)
    assert any(line.startswith("spec.resources.cpu: ") for line in problems.splitlines())
    assert any(line.startswith("spec.resources.memory: ") for line in problems.splitlines())
    good = parse_spec(cj({**base, "resources": {"cpu": "500m", "memory": "4Gi"}}))
    assert isinstance(good, CompressionJobSpec)


def test_pvc_claims_that_are_no_claim_names_are_refused_by_field() -> None:
    base = {"steps": [{"export": {}}], "output": {"uri": "pvc://results.v2/out"}}
    problems = parse_spec(cj({**base, "model": {"uri": "pvc://Models/x.onnx"}}))
    assert isinstance(problems, str)
    assert "spec.model.uri: pvc://CLAIM/path names a PersistentVolumeClaim" in problems
    student = {"distill": {"student": {"uri": "pvc://a_b/s"}}}
    problems = parse_spec(
        cj({**base, "model": {"uri": "s3://m/x"}, "steps": [{"export": {}}, student],
            "data": {"training": {"uri": "s3://d/t.npz"}}})
    )  # fmt: skip
    assert isinstance(problems, str)
    assert "spec.steps[].distill.student.uri: pvc://CLAIM/path" in problems
    dotted = parse_spec(cj({**base, "model": {"uri": "pvc://team.models/x.onnx"}}))
    assert isinstance(dotted, CompressionJobSpec)  # dots are fine in a claim name
