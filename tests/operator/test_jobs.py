"""build_runner_job: the runner Job for one generation, as a pure manifest."""

from __future__ import annotations

import json
from typing import Any

from kondense.api.spec import CompressionJobSpec
from kondense.operator.config import DEFAULT_RUNNER_COMMAND, PoolConfig
from kondense.operator.jobs import build_runner_job, pvc_claims, runner_job_name

CPU = PoolConfig(
    image="runner-cpu:1",
    nodeSelector={"kondense.dev/pool": "cpu"},
    resources={"requests": {"cpu": "1", "memory": "2Gi"}},
)
GPU = PoolConfig(
    image="runner-gpu:1",
    nodeSelector={"kondense.dev/pool": "gpu"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    resources={"limits": {"nvidia.com/gpu": "1"}},
)


def cj(name: str = "bert-int8", generation: int = 3, **spec: Any) -> dict[str, Any]:
    body = {
        "model": {"uri": "s3://models/bert"},
        "steps": [{"quantize": {"mode": "dynamic"}}],
        "output": {"uri": "s3://out/bert"},
    }
    body.update(spec)
    return {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": name, "namespace": "team", "uid": "u-1", "generation": generation},
        "spec": body,
    }


def build(cj: dict[str, Any], pool_name: str, pool: PoolConfig, **kw: Any) -> dict[str, Any]:
    """build_runner_job as the reconciler calls it: metadata and the parsed spec."""
    spec = CompressionJobSpec.model_validate(cj["spec"])
    return build_runner_job(cj["metadata"], spec, pool_name, pool, **kw)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def test_job_name_is_deterministic_per_generation() -> None:
    first = build(cj(generation=3), "cpu", CPU)
    again = build(cj(generation=3), "cpu", CPU)
    assert first == again
    assert first["metadata"]["name"] == "bert-int8-g3"
    assert build(cj(generation=4), "cpu", CPU)["metadata"]["name"] == "bert-int8-g4"


def test_long_names_are_shortened_to_a_valid_label_value_and_stay_distinct() -> None:
    a = runner_job_name("a" * 80, 12)
    b = runner_job_name("a" * 79 + "b", 12)
    assert len(a) <= 63 and a.endswith("-g12") and a != b


def test_spec_travels_as_json_in_the_job_env_and_the_runner_reads_it() -> None:
    job = build(cj(), "cpu", CPU)
    container = pod_spec(job)["containers"][0]
    assert container["command"] == DEFAULT_RUNNER_COMMAND
    env = {e["name"]: e["value"] for e in container["env"]}
    manifest = json.loads(env["KONDENSE_JOB"])
    assert manifest["spec"] == cj()["spec"]
    assert manifest["metadata"]["generation"] == 3
    assert container["terminationMessagePath"] == "/dev/termination-log"


def test_owner_reference_points_at_the_compression_job() -> None:
    (owner,) = build(cj(), "cpu", CPU)["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "name": "bert-int8",
        "uid": "u-1",
        "controller": True,
    }


def test_deadline_from_timeout_bounded_retries_and_no_retry_for_bad_input() -> None:
    job = build(cj(timeoutSeconds=900), "cpu", CPU, backoff_limit=2)
    # The runner stops itself at 900 s and reports it; the Job's deadline is the backstop.
    assert job["spec"]["activeDeadlineSeconds"] == 900 + 60
    assert job["spec"]["backoffLimit"] == 2
    fail_job = job["spec"]["podFailurePolicy"]["rules"][0]
    assert fail_job["action"] == "FailJob"
    assert fail_job["onExitCodes"]["values"] == [2, 3, 4]
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_runner_pod_meets_the_restricted_pod_security_standard() -> None:
    spec = pod_spec(build(cj(), "cpu", CPU))
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = spec["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert "/tmp" in mounts  # writable scratch despite the read-only root


def test_pool_settings_place_the_pod_and_spec_resources_override() -> None:
    job = build(cj(resources={"cpu": "3", "memory": "6Gi"}), "gpu", GPU)
    spec = pod_spec(job)
    assert spec["nodeSelector"] == {"kondense.dev/pool": "gpu"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    resources = spec["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "1", "cpu": "3", "memory": "6Gi"}
    assert spec["containers"][0]["image"] == "runner-gpu:1"


def test_pvc_uris_become_volumes_under_the_pvc_root_output_writable() -> None:
    spec = {
        "model": {"uri": "pvc://models/bert"},
        "data": {"evaluation": {"uri": "pvc://models/eval.npz"}},
        "output": {"uri": "pvc://results/bert"},
    }
    assert pvc_claims(CompressionJobSpec.model_validate(cj(**spec)["spec"])) == {
        "models": False,
        "results": True,
    }
    job = build(cj(**spec), "cpu", CPU)
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert volumes["pvc-models"]["persistentVolumeClaim"] == {
        "claimName": "models",
        "readOnly": True,
    }
    mounts = {m["name"]: m for m in pod_spec(job)["containers"][0]["volumeMounts"]}
    assert mounts["pvc-results"] == {
        "name": "pvc-results",
        "mountPath": "/mnt/pvc/results",
        "readOnly": False,
    }
    env = {e["name"]: e["value"] for e in pod_spec(job)["containers"][0]["env"]}
    assert env["KONDENSE_PVC_ROOT"] == "/mnt/pvc"


def test_pool_command_override_replaces_the_runner_command() -> None:
    pool = CPU.model_copy(update={"command": ["python", "-c", "pass"]})
    job = build(cj(), "cpu", pool)
    assert pod_spec(job)["containers"][0]["command"] == ["python", "-c", "pass"]


def test_every_uri_of_the_spec_is_listed_and_only_the_output_is_written() -> None:
    spec = CompressionJobSpec.model_validate(
        cj(
            model={"uri": "pvc://models/teacher"},
            data={
                "calibration": {"uri": "pvc://data/cal.npz"},
                "evaluation": {"uri": "s3://data/eval.npz"},
                "training": {"uri": "pvc://train/t.jsonl"},
            },
            steps=[{"distill": {"student": {"uri": "pvc://students/s"}}}],
            output={"uri": "pvc://results/out"},
        )["spec"]
    )
    assert spec.uris() == [
        ("spec.model.uri", "pvc://models/teacher", False),
        ("spec.data.calibration.uri", "pvc://data/cal.npz", False),
        ("spec.data.evaluation.uri", "s3://data/eval.npz", False),
        ("spec.data.training.uri", "pvc://train/t.jsonl", False),
        ("spec.steps[0].distill.student.uri", "pvc://students/s", False),
        ("spec.output.uri", "pvc://results/out", True),
    ]
    assert pvc_claims(spec) == {
        "models": False,
        "data": False,
        "train": False,
        "students": False,
        "results": True,
    }


def test_claims_whose_names_are_not_volume_names_still_get_valid_volume_names() -> None:
    """A claim is a DNS subdomain (dots, up to 253 characters); a volume name is a DNS label."""
    import re

    long_claim = "team-models-" + "x" * 60
    spec = {"model": {"uri": "pvc://models.v2/bert"}, "output": {"uri": f"pvc://{long_claim}/o"}}
    volumes = pod_spec(build(cj(**spec), "cpu", CPU))["volumes"]
    claims = {v["persistentVolumeClaim"]["claimName"]: v["name"] for v in volumes[2:]}
    assert set(claims) == {"models.v2", long_claim}
    for name in claims.values():
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name), name
    mounts = {
        m["name"] for m in pod_spec(build(cj(**spec), "cpu", CPU))["containers"][0]["volumeMounts"]
    }
    assert set(claims.values()) <= mounts


def test_unavailable_storage_is_retried_and_only_the_inputs_fault_fails_at_once() -> None:
    from kondense.api.errors import (
        EXIT_BAD_INPUT,
        EXIT_REJECTED,
        EXIT_STORAGE_UNAVAILABLE,
        EXIT_TIMED_OUT,
    )

    rules = build(cj(), "cpu", CPU)["spec"]["podFailurePolicy"]["rules"]
    final = {v for r in rules if r["action"] == "FailJob" for v in r["onExitCodes"]["values"]}
    assert final == {EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_TIMED_OUT}
    assert EXIT_STORAGE_UNAVAILABLE not in final


def test_every_attempt_gets_the_same_absolute_deadline_created_with_the_job() -> None:
    """Retries share the Job's activeDeadlineSeconds, so the runner gets the end of the job's
    time, not a fresh timeoutSeconds per pod."""
    from kondense.api.errors import DEADLINE_ENV

    job = build(cj(timeoutSeconds=600), "cpu", CPU, created=1_800_000_000.0)
    env = {e["name"]: e["value"] for e in pod_spec(job)["containers"][0]["env"]}
    assert float(env[DEADLINE_ENV]) == 1_800_000_000.0 + 600
    assert job["spec"]["activeDeadlineSeconds"] == 600 + 60
