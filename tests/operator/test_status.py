"""compute_status: Job and pod observations -> phase, conditions, runner, results."""

from __future__ import annotations

from typing import Any

from kondense.api.crd import PHASES
from kondense.api.outcome import Artifact, Figures, Outcome, Results, termination_message
from kondense.api.spec import CompressionJobSpec
from kondense.operator import status as status_module
from kondense.operator.status import (
    compute_status,
    operator_failure,
    status_patch,
    transition,
)

NOW = "2026-01-01T00:10:00Z"


def cj(generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation},
        "spec": {"steps": [{"export": {}}, {"optimize": {}}, {"quantize": {"mode": "dynamic"}}]},
        "status": status or {},
    }


SPEC = CompressionJobSpec.model_validate(
    {
        "model": {"uri": "s3://m/model.onnx"},
        "steps": [{"export": {}}, {"optimize": {}}, {"quantize": {"mode": "dynamic"}}],
        "output": {"uri": "s3://o/"},
    }
)


def status_of(
    cj: dict[str, Any], pool: str, job: dict[str, Any] | None, pods: list[Any], now: str
) -> dict[str, Any]:
    """compute_status for cj() (whose spec is SPEC, parsed as the reconciler does)."""
    return compute_status(cj, SPEC, pool, job, pods, now)


def job(condition: str | None = None, reason: str = "", message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": "2026-01-01T00:00:00Z"}
    if condition:
        status["conditions"] = [
            {
                "type": condition,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": "2026-01-01T00:05:00Z",
            }
        ]
    if condition == "Complete":
        status["completionTime"] = "2026-01-01T00:05:00Z"
    return {"metadata": {"name": "m-g1"}, "status": status}


def pod(name: str, phase: str, message: str | None = None, created: str = "1") -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}}
    if phase in ("Succeeded", "Failed"):
        state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 2}}
        if message is not None:
            state["terminated"]["message"] = message
    return {
        "metadata": {"name": name, "creationTimestamp": f"2026-01-01T00:0{created}:00Z"},
        "spec": {"nodeName": "cpu-1"},
        "status": {"phase": phase, "containerStatuses": [{"name": "runner", "state": state}]},
    }


FIGURES = Figures(bytes=400, latency_ms_p50=2.0, latency_ms_p95=3.0, throughput=500.0, metric=0.98)
RESULTS = Results(
    baseline=FIGURES.model_copy(update={"bytes": 1600, "latency_ms_p50": 4.0, "metric": 0.99}),
    compressed=FIGURES,
    metric_name="accuracy",
    metric_drop=0.01,
    size_ratio=4.0,
    speedup=2.0,
    device="cpu",
    threads=1,
    batch_size=1,
)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_no_job_yet_is_pending_and_reconciling() -> None:
    status = status_of(cj(), "cpu", None, [], NOW)
    assert status["phase"] == "Pending"
    assert conditions(status)["Reconciling"] == ("True", "CreatingJob")
    assert conditions(status)["Ready"][0] == "False"
    assert status["recipe"] == "export>optimize>int8-dynamic"


def test_running_pod_gives_running_with_node_and_pool() -> None:
    status = status_of(cj(), "cpu", job(), [pod("p1", "Running")], NOW)
    assert status["phase"] == "Running"
    assert status["runner"] == {
        "pool": "cpu",
        "attempts": 1,
        "job": "m-g1",
        "pod": "p1",
        "node": "cpu-1",
    }
    assert status["startTime"] == "2026-01-01T00:00:00Z"


def test_completed_job_copies_results_and_artifacts_from_the_termination_message() -> None:
    outcome = Outcome(
        succeeded=True,
        reason="Succeeded",
        message="4.00x smaller",
        results=RESULTS,
        artifacts=[Artifact(name="model.onnx", uri="s3://o/model.onnx", sha256="ab", bytes=400)],
    )
    pods = [pod("p1", "Succeeded", termination_message(outcome))]
    status = status_of(cj(), "cpu", job("Complete"), pods, NOW)
    assert status["phase"] == "Succeeded"
    assert conditions(status)["Ready"] == ("True", "Succeeded")
    assert conditions(status)["Succeeded"][0] == "True"
    assert conditions(status)["Reconciling"][0] == "False"
    assert status["results"]["sizeRatio"] == 4.0 and status["results"]["speedup"] == 2.0
    assert status["artifacts"][0]["name"] == "model.onnx"
    assert status["completionTime"] == "2026-01-01T00:05:00Z"


def test_bad_input_failure_carries_the_runners_reason_and_message() -> None:
    outcome = Outcome(succeeded=False, reason="BadInput", message="spec.model.uri: no such file")
    pods = [pod("p1", "Failed", termination_message(outcome))]
    status = status_of(cj(), "cpu", job("Failed", "PodFailurePolicy", "exit 2"), pods, NOW)
    assert status["phase"] == "Failed"
    assert status["reason"] == "BadInput"
    assert status["message"] == "spec.model.uri: no such file"
    assert conditions(status)["Stalled"] == ("True", "BadInput")
    assert conditions(status)["Failed"] == ("True", "BadInput")
    assert conditions(status)["Ready"] == ("False", "BadInput")


def test_deadline_is_reported_as_such_even_with_a_runner_message() -> None:
    pods = [pod("p1", "Failed", "kondense: exporting (1/3)")]
    status = status_of(cj(), "cpu", job("Failed", "DeadlineExceeded", "too long"), pods, NOW)
    assert status["reason"] == "DeadlineExceeded"
    assert "kondense: exporting" in status["message"]


def test_an_oom_killed_runner_fails_the_job_saying_which_limit_to_raise() -> None:
    killed = pod("p1", "Failed")
    killed["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 137, "reason": "OOMKilled"}
    }
    killed["spec"]["containers"] = [{"name": "runner", "resources": {"limits": {"memory": "1Gi"}}}]
    status = status_of(
        cj(), "cpu", job("Failed", "BackoffLimitExceeded", "too many"), [killed], NOW
    )
    assert status["phase"] == "Failed"
    assert status["reason"] == "OOMKilled"
    assert "limit (1Gi)" in status["message"]
    assert "spec.resources.memory" in status["message"]
    assert conditions(status)["Failed"] == ("True", "OOMKilled")


def test_a_runner_killed_otherwise_keeps_the_jobs_reason() -> None:
    killed = pod("p1", "Failed")
    killed["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 137}}
    status = status_of(
        cj(), "cpu", job("Failed", "BackoffLimitExceeded", "too many"), [killed], NOW
    )
    assert status["reason"] == "BackoffLimitExceeded"


def test_a_pod_that_ended_before_the_job_is_marked_stays_running_not_pending() -> None:
    outcome = Outcome(succeeded=True, reason="Succeeded", message="done", results=RESULTS)
    ended = [pod("p1", "Succeeded", termination_message(outcome))]
    status = status_of(cj(), "cpu", job(), ended, NOW)
    assert status["phase"] == "Running"
    assert "finished on cpu-1" in status["message"]
    failed = status_of(cj(), "cpu", job(), [pod("p1", "Failed")], NOW)
    assert failed["phase"] == "Running" and "failed on cpu-1" in failed["message"]


def test_retried_job_reports_the_latest_pod_and_the_attempt_count() -> None:
    pods = [pod("p1", "Failed", created="1"), pod("p2", "Running", created="2")]
    status = status_of(cj(), "cpu", job(), pods, NOW)
    assert status["runner"]["pod"] == "p2" and status["runner"]["attempts"] == 2
    assert "attempt 2" in status["message"]


def test_condition_transition_time_moves_only_when_its_status_changes() -> None:
    first = status_of(cj(), "cpu", job(), [pod("p1", "Running")], "2026-01-01T00:01:00Z")
    second = status_of(cj(status=first), "cpu", job(), [pod("p1", "Running")], NOW)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times["Reconciling"] == "2026-01-01T00:01:00Z"
    assert status_patch(first, second) is None
    assert transition(first, second) is None


def test_new_generation_drops_old_results_and_posts_an_event() -> None:
    done = {"observedGeneration": 1, "phase": "Succeeded", "reason": "Succeeded", "results": {}}
    status = status_of(cj(generation=2, status=done), "cpu", None, [], NOW)
    patch = status_patch(done, status)
    assert patch is not None and patch["results"] is None and patch["observedGeneration"] == 2
    moved = transition(done, status)
    assert moved is not None and moved.type == "Normal" and "generation 2" in moved.message


def test_failure_event_is_a_warning() -> None:
    failed = operator_failure(cj(), SPEC, "tpu", "UnknownNodePool", "spec.nodePool: no pool", NOW)
    moved = transition({}, failed)
    assert moved is not None and moved.type == "Warning" and moved.reason == "UnknownNodePool"
    assert failed["recipe"] == "export>optimize>int8-dynamic"


def test_invalid_spec_fails_without_a_recipe() -> None:
    failed = operator_failure(cj(), None, "", "InvalidSpec", "spec.model: required", NOW)
    assert failed["phase"] == "Failed" and failed["reason"] == "InvalidSpec"
    assert "recipe" not in failed
    assert {c["type"]: c["status"] for c in failed["conditions"]}["Stalled"] == "True"


def test_phases_are_the_crds() -> None:
    # One list: the status the operator writes uses the CRD's enum.
    names = (status_module.PENDING, status_module.RUNNING)
    assert [*names, *status_module.TERMINAL] == PHASES


def test_unschedulable_pod_stalls_the_job_with_the_schedulers_words() -> None:
    waiting = pod("p1", "Pending")
    waiting["spec"] = {}
    waiting["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 node(s) didn't match node selector.",
            }
        ],
    }
    status = status_of(cj(), "gpu", job(), [waiting], NOW)
    assert status["phase"] == "Pending" and status["reason"] == "Unschedulable"
    assert "didn't match node selector" in status["message"]
    assert "spec.nodePool" in status["message"]
    assert conditions(status)["Stalled"] == ("True", "Unschedulable")
    assert conditions(status)["Reconciling"] == ("False", "Unschedulable")
    moved = transition({}, status)
    assert moved is not None and moved.type == "Warning"


def test_image_pull_error_stalls_the_job_and_a_plain_wait_does_not() -> None:
    stuck = pod("p1", "Pending")
    stuck["status"] = {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": "runner",
                "image": "kondense-runner-cpu:typo",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
            }
        ],
    }
    status = status_of(cj(), "cpu", job(), [stuck], NOW)
    assert status["reason"] == "ImagePullBackOff" and "not found" in status["message"]
    assert conditions(status)["Stalled"][0] == "True"

    stuck["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    status = status_of(cj(), "cpu", job(), [stuck], NOW)
    assert status["reason"] == "PodPending"
    assert conditions(status)["Stalled"][0] == "False"
    assert conditions(status)["Reconciling"][0] == "True"


def test_a_new_generation_clears_the_runner_pod_and_node_of_the_old_one() -> None:
    """A merge patch merges nested objects: runner.pod and runner.node of generation 1 must be
    removed explicitly when generation 2 has no pod yet."""
    old = status_of(cj(), "cpu", job(), [pod("p1", "Running")], NOW)
    new = status_of(cj(generation=2, status=old), "cpu", None, [], NOW)
    patch = status_patch(old, new)
    assert patch is not None
    assert patch["runner"]["pod"] is None and patch["runner"]["node"] is None
    assert apply_merge_patch(old, patch)["runner"] == new["runner"]


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the apiserver applies a status merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def test_artifacts_left_out_of_the_termination_message_are_counted_and_the_status_says_so() -> None:
    many = [
        Artifact(name=f"shard-{i:03}.bin", uri=f"s3://o/shard-{i:03}.bin", sha256="f" * 64, bytes=i)
        for i in range(60)
    ]
    outcome = Outcome(succeeded=True, reason="Succeeded", message="done", artifacts=many)
    text = termination_message(outcome)
    assert len(text.encode()) <= 4096
    kept = Outcome.model_validate_json(text)
    assert kept.artifacts_omitted is not None and kept.artifacts_omitted > 0
    assert len(kept.artifacts) + kept.artifacts_omitted == len(many)
    status = status_of(cj(), "cpu", job("Complete"), [pod("p1", "Succeeded", text)], NOW)
    assert len(status["artifacts"]) == len(kept.artifacts)
    assert f"{kept.artifacts_omitted} more artifacts" in status["message"]
    assert "report.json" in status["message"]
    assert (
        "artifactsOmitted"
        not in Outcome.model_validate_json(
            termination_message(Outcome(succeeded=True, reason="Succeeded", message="done"))
        ).to_json_dict()
    )
