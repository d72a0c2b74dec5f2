"""Queueing runner Jobs with Kueue: which LocalQueue a job waits in, and Kueue's words for why.

A runner Job with the label `kueue.x-k8s.io/queue-name` belongs to Kueue. The operator creates it
suspended (as Kueue's own webhook would make it), and Kueue unsuspends it when the LocalQueue's
ClusterQueue has quota for it; the operator never unsuspends a Job itself. While it waits, Kueue
keeps a Workload for it (labelled with the Job's UID) whose conditions say why it is not
admitted yet; the CompressionJob's status repeats them.
"""

from __future__ import annotations

from typing import Any

from kondense.api.spec import CompressionJobSpec
from kondense.operator.config import PoolConfig

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
WORKLOAD_GROUP = "kueue.x-k8s.io"
# Newest first: Kueue serves v1beta2 since 0.15; older releases only v1beta1. The conditions
# read here are the same in both.
WORKLOAD_VERSIONS = ("v1beta2", "v1beta1")
WORKLOAD_PLURAL = "workloads"
WORKLOAD_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"


def queue_name(spec: CompressionJobSpec, pool: PoolConfig) -> str | None:
    """The LocalQueue the job's runner Job waits in: spec.queueName, else the pool's queueName,
    else the queue-name label among the pool's jobLabels; None when the Job is not queued."""
    return spec.queue_name or pool.queue_name or pool.job_labels.get(QUEUE_LABEL) or None


def job_queue(job: dict[str, Any]) -> str | None:
    """The LocalQueue a runner Job was created for (its queue-name label), or None."""
    return ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL) or None


def is_suspended(job: dict[str, Any]) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def workload_wait(workload: dict[str, Any] | None) -> str | None:
    """Why Kueue has not admitted the Workload (its pending, not-admitted or eviction condition
    message, e.g. "couldn't assign flavors to pod set main: insufficient unused quota for cpu
    in flavor default, 100m more needed"); None when it says nothing."""
    if not workload:
        return None
    conditions = {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []}
    for kind, status in (("Evicted", "True"), ("QuotaReserved", "False"), ("Admitted", "False")):
        condition = conditions.get(kind)
        if condition and condition.get("status") == status and condition.get("message"):
            return str(condition["message"])
    return None
