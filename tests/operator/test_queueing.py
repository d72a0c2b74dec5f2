"""Kueue queueing without a cluster: which runner Jobs are queued and suspended, and what the
CompressionJob says while one waits (operator/queueing.py). tests/operator/test_kueue.py runs
the same against the real Kueue."""

from __future__ import annotations

from typing import Any

import pytest
from gitops.health_testdata import PENDING_WORKLOAD
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from kondense.api.errors import DEADLINE_ENV
from kondense.api.spec import CompressionJobSpec
from kondense.operator.config import PoolConfig
from kondense.operator.jobs import build_runner_job
from kondense.operator.queueing import QUEUE_LABEL, workload_wait
from kondense.operator.reconcile import Reconciler
from kondense.operator.status import compute_status

META = {"name": "bert", "namespace": "team-a", "uid": "u-1", "generation": 1}
BODY = {
    "model": {"uri": "s3://models/bert"},
    "steps": [{"quantize": {"mode": "dynamic"}}],
    "output": {"uri": "s3://out/bert"},
}
NOW = "2026-01-01T00:10:00Z"


def spec(**fields: Any) -> CompressionJobSpec:
    return CompressionJobSpec.model_validate({**BODY, **fields})


def pool(**fields: Any) -> PoolConfig:
    return PoolConfig.model_validate({"image": "runner:1", **fields})


def build(job_spec: CompressionJobSpec, job_pool: PoolConfig) -> dict[str, Any]:
    return build_runner_job(META, job_spec, "cpu", job_pool, created=1_800_000_000.0)


def env(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_a_job_without_a_queue_is_neither_labelled_nor_suspended() -> None:
    job = build(spec(), pool())
    assert "suspend" not in job["spec"]
    assert QUEUE_LABEL not in job["metadata"]["labels"]
    assert DEADLINE_ENV in env(job)


@pytest.mark.parametrize(
    ("job_spec", "job_pool", "queue"),
    [
        (spec(), pool(queueName="compression"), "compression"),
        (spec(), pool(jobLabels={QUEUE_LABEL: "from-labels"}), "from-labels"),
        (spec(queueName="team-a-gpu"), pool(queueName="compression"), "team-a-gpu"),
        (spec(queueName="mine"), pool(jobLabels={QUEUE_LABEL: "from-labels"}), "mine"),
    ],
    ids=["pool", "pool-job-labels", "spec-over-pool", "spec-over-job-labels"],
)
def test_a_queued_job_is_created_suspended_with_the_queue_label(
    job_spec: CompressionJobSpec, job_pool: PoolConfig, queue: str
) -> None:
    job = build(job_spec, job_pool)
    assert job["spec"]["suspend"] is True
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels[QUEUE_LABEL] == queue


def test_a_queued_jobs_deadline_counts_from_its_start_not_its_creation() -> None:
    """It may wait in the queue longer than timeoutSeconds: an absolute deadline fixed at
    creation would time the runner out as soon as Kueue starts it."""
    job = build(spec(timeoutSeconds=600), pool(queueName="compression"))
    assert DEADLINE_ENV not in env(job)
    assert job["spec"]["activeDeadlineSeconds"] == 600 + 60


def test_a_queue_name_must_be_a_label_value() -> None:
    with pytest.raises(ValidationError, match="queueName"):
        spec(queueName="Team A")
    with pytest.raises(ValidationError, match="queueName"):
        pool(queueName="x" * 64)


def suspended_job(queue: str | None) -> dict[str, Any]:
    labels = {QUEUE_LABEL: queue} if queue else {}
    return {
        "metadata": {"name": "bert-g1", "uid": "j-1", "labels": labels},
        "spec": {"suspend": True},
        "status": {
            "conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]
        },
    }


def status(job: dict[str, Any], workload: dict[str, Any] | None) -> dict[str, Any]:
    cj = {"metadata": META, "spec": BODY, "status": {}}
    return compute_status(cj, spec(), "cpu", job, [], NOW, workload)


def test_a_queued_job_says_in_words_why_kueue_has_not_admitted_it() -> None:
    found = status(suspended_job("compression"), PENDING_WORKLOAD)
    assert (found["phase"], found["reason"]) == ("Pending", "Queued")
    assert found["message"] == (
        "waiting in Kueue queue compression: couldn't assign flavors to pod set main:"
        " insufficient unused quota for cpu in flavor default-flavor, 100m more needed"
    )
    conditions = {c["type"]: c for c in found["conditions"]}
    # Waiting for quota is progress, not a stall: Kueue starts it when quota frees up.
    assert conditions["Reconciling"]["status"] == "True"
    assert conditions["Stalled"]["status"] == "False"
    assert "startTime" not in found  # it starts when Kueue admits it


def test_before_kueue_made_its_workload_the_status_says_who_starts_the_job() -> None:
    found = status(suspended_job("compression"), None)
    assert found["reason"] == "Queued"
    assert found["message"].startswith("waiting in Kueue queue compression: ")
    assert "LocalQueue named compression" in found["message"]


def test_a_job_suspended_by_someone_else_says_it_waits_to_be_resumed() -> None:
    found = status(suspended_job(None), None)
    assert (found["phase"], found["reason"]) == ("Pending", "Suspended")
    assert "spec.suspend" in found["message"]


def test_an_evicted_workload_gives_its_eviction_message() -> None:
    workload = {
        "status": {
            "conditions": [
                {"type": "QuotaReserved", "status": "True", "message": "Quota reserved"},
                {"type": "Evicted", "status": "True", "message": "Preempted to accommodate x"},
            ]
        }
    }
    assert workload_wait(workload) == "Preempted to accommodate x"
    assert workload_wait({"status": {}}) is None


class Workloads:
    """CustomObjectsApi.list_namespaced_custom_object answering per Workload API version."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, **kw: Any
    ) -> Any:
        self.asked.append((version, kw["label_selector"]))
        answer = self.answers[version]
        if isinstance(answer, int):
            raise ApiException(status=answer)
        return answer


def read_workload(answers: dict[str, Any]) -> tuple[Any, list[tuple[str, str]]]:
    reconciler = Reconciler.__new__(Reconciler)  # only the client and timeout are used
    reconciler.custom = Workloads(answers)  # type: ignore[assignment]
    reconciler.timeout = 1.0
    job = suspended_job("compression")
    job["metadata"]["namespace"] = "team-a"
    found = reconciler._workload(job)
    return found, reconciler.custom.asked  # type: ignore[attr-defined]


def test_the_workload_is_found_by_the_jobs_uid_in_the_newest_version_served() -> None:
    found, asked = read_workload({"v1beta2": 404, "v1beta1": {"items": [PENDING_WORKLOAD]}})
    assert found == PENDING_WORKLOAD
    assert asked == [("v1beta2", "kueue.x-k8s.io/job-uid=j-1"),
                     ("v1beta1", "kueue.x-k8s.io/job-uid=j-1")]  # fmt: skip


def test_without_kueue_or_the_right_to_read_workloads_the_status_just_says_it_waits() -> None:
    assert read_workload({"v1beta2": 404, "v1beta1": 404})[0] is None
    assert read_workload({"v1beta2": 403})[0] is None
    assert read_workload({"v1beta2": {"items": []}})[0] is None
