"""CompressionJob status from what the operator observes: a pure function of the Job and pods.

Phases Pending -> Running -> Succeeded | Failed. Conditions follow kstatus (Ready, Reconciling,
Stalled) plus Succeeded and Failed, each with a CamelCase reason and a human message.
The outcome (results, artifacts, reason, message) comes from the runner pod's termination
message, the compact `Outcome` JSON of `api/outcome.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kondense.api.crd import FAILED, PENDING, RUNNING, SUCCEEDED
from kondense.api.outcome import Outcome
from kondense.api.spec import CompressionJobSpec
from kondense.api.steps import recipe_label
from kondense.operator.jobs import CONTAINER
from kondense.operator.queueing import is_suspended, job_queue, workload_wait

TERMINAL = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class Phase:
    """Where the job is, and why; `stalled` when it cannot move on without someone's help."""

    phase: str
    reason: str
    message: str
    stalled: bool = False


# Container waiting reasons that do not clear by themselves (a kubelet retries, but the same
# image or missing config fails the same way): the job is stalled until someone fixes them.
STUCK_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def read_outcome(pod: dict[str, Any]) -> Outcome | str | None:
    """The runner's Outcome from a terminated pod's termination message; the raw text when it
    is not Outcome JSON (e.g. log lines from FallbackToLogsOnError); None when absent."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != CONTAINER:
            continue
        terminated = (status.get("state") or {}).get("terminated") or {}
        text = terminated.get("message")
        if not text:
            return None
        try:
            return Outcome.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            return str(text).strip()[-1024:]
    return None


def _job_condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _by_age(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"])
    )


def _last_terminated(pods: list[dict[str, Any]], phase: str) -> dict[str, Any] | None:
    matching = [p for p in _by_age(pods) if (p.get("status") or {}).get("phase") == phase]
    return matching[-1] if matching else None


def observe_phase(
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    workload: dict[str, Any] | None = None,
) -> tuple[Phase, Outcome | None]:
    """The phase the runner Job and its pods are in, and the runner's outcome once finished.
    `workload`: Kueue's Workload of a queued Job, when the operator could read it."""
    if job is None:
        return Phase(PENDING, "CreatingJob", "creating the runner Job"), None
    if (done := _job_condition(job, "Complete")) is not None:
        pod = _last_terminated(pods, "Succeeded")
        outcome = read_outcome(pod) if pod else None
        if isinstance(outcome, Outcome):
            message = outcome.message + _omitted_note(outcome)
            return Phase(SUCCEEDED, outcome.reason or "Succeeded", message), outcome
        return Phase(SUCCEEDED, "Succeeded", done.get("message") or "the runner finished"), None
    if (failed := _job_condition(job, "Failed")) is not None:
        pod = _last_terminated(pods, "Failed")
        outcome = read_outcome(pod) if pod else None
        job_reason = failed.get("reason") or "JobFailed"
        if isinstance(outcome, Outcome) and job_reason != "DeadlineExceeded":
            return Phase(FAILED, outcome.reason, outcome.message + _omitted_note(outcome)), outcome
        if pod is not None and (oom := _oom_killed(pod)) is not None:
            return Phase(FAILED, "OOMKilled", oom), None
        message = failed.get("message") or "the runner Job failed"
        if isinstance(outcome, str) and outcome:
            message = f"{message}; runner said: {outcome}"
        return Phase(FAILED, job_reason, message), None
    if is_suspended(job):
        return _suspended(job, workload), None
    latest = _by_age(pods)[-1] if pods else None
    pod_phase = (latest.get("status") or {}).get("phase") if latest is not None else None
    if latest is not None and pod_phase in ("Running", "Succeeded", "Failed"):
        # A pod that has ended before the Job controller marks the Job is still this attempt
        # running, not a step back to Pending: the Job's condition follows within moments.
        node = (latest.get("spec") or {}).get("nodeName", "?")
        attempt = f" (attempt {len(pods)})" if len(pods) > 1 else ""
        doing = {"Running": "running", "Succeeded": "finished", "Failed": "failed"}[pod_phase]
        return Phase(RUNNING, "RunnerRunning", f"runner pod {doing} on {node}{attempt}"), None
    if latest is not None:
        return _pending(latest), None
    return Phase(PENDING, "JobCreated", "runner Job created, waiting for its pod"), None


def _suspended(job: dict[str, Any], workload: dict[str, Any] | None) -> Phase:
    """A runner Job that waits for Kueue to admit it (or that someone suspended): the operator
    never resumes it, so the status says who will."""
    queue = job_queue(job)
    if queue is None:
        return Phase(
            PENDING,
            "Suspended",
            f"the runner Job {job['metadata']['name']} is suspended; it starts when its"
            " spec.suspend is set to false",
        )
    why = workload_wait(workload) or (
        f"the runner Job stays suspended until Kueue admits it; check that Kueue runs and that"
        f" the namespace has a LocalQueue named {queue}"
    )
    return Phase(PENDING, "Queued", f"waiting in Kueue queue {queue}: {why}")


def _oom_killed(pod: dict[str, Any]) -> str | None:
    """What to tell the user when the kernel killed the runner for its memory, else None."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if status.get("name") == CONTAINER and terminated.get("reason") == "OOMKilled":
            break
    else:
        return None
    containers = (pod.get("spec") or {}).get("containers") or []
    runner: dict[str, Any] = next((c for c in containers if c.get("name") == CONTAINER), {})
    limit = ((runner.get("resources") or {}).get("limits") or {}).get("memory")
    used = f"more memory than its limit ({limit})" if limit else "more memory than it was given"
    name = (pod.get("metadata") or {}).get("name", "?")
    return (
        f"the runner pod {name} was OOMKilled: it used {used}. Raise spec.resources.memory "
        "in the CompressionJob, or the node pool's resources.limits.memory in the operator's "
        "config for every job of the pool."
    )


def _omitted_note(outcome: Outcome) -> str:
    """What a status whose artifacts list was cut to fit the termination message adds."""
    if not outcome.artifacts_omitted:
        return ""
    return (
        f" ({outcome.artifacts_omitted} more artifacts than status.artifacts lists;"
        " report.json in spec.output.uri lists them all)"
    )


def _pending(pod: dict[str, Any]) -> Phase:
    """A runner pod that is not running yet: waiting normally, or stuck (unschedulable, image
    or container configuration errors), with the scheduler's or kubelet's words."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return Phase(
                PENDING,
                "Unschedulable",
                f"the runner pod cannot be scheduled: {condition.get('message') or 'no node fits'}"
                " Check the node pool's nodeSelector, tolerations and resources in the operator"
                " configuration, or choose another pool with spec.nodePool.",
                stalled=True,
            )
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            detail = waiting.get("message") or f"image {container.get('image', '?')}"
            return Phase(
                PENDING,
                str(waiting["reason"]),
                f"the runner container cannot start: {detail}. Check the pool's runner image"
                " and the pod's configuration in the operator configuration.",
                stalled=True,
            )
    return Phase(PENDING, "PodPending", "runner pod waiting to be scheduled or started")


def _conditions(phase: Phase, generation: int) -> dict[str, tuple[str, str, str]]:
    """type -> (status, reason, message)."""
    p, reason, message = phase.phase, phase.reason, phase.message
    if p == SUCCEEDED:
        return {
            "Ready": ("True", reason, message),
            "Reconciling": ("False", reason, "the recipe ran to completion"),
            "Stalled": ("False", reason, "the recipe ran to completion"),
            "Succeeded": ("True", reason, message),
            "Failed": ("False", reason, "the recipe ran to completion"),
        }
    if p == FAILED:
        return {
            "Ready": ("False", reason, message),
            "Reconciling": ("False", reason, "no further attempts; change the spec to retry"),
            "Stalled": ("True", reason, message),
            "Succeeded": ("False", reason, message),
            "Failed": ("True", reason, message),
        }
    waiting = f"generation {generation}: {message}"
    if phase.stalled:
        resumes = "the job resumes by itself once the cause is fixed"
        return {
            "Ready": ("False", reason, waiting),
            "Reconciling": ("False", reason, resumes),
            "Stalled": ("True", reason, waiting),
            "Succeeded": ("False", reason, waiting),
            "Failed": ("False", reason, waiting),
        }
    return {
        "Ready": ("False", reason, waiting),
        "Reconciling": ("True", reason, waiting),
        "Stalled": ("False", reason, waiting),
        "Succeeded": ("False", reason, waiting),
        "Failed": ("False", reason, waiting),
    }


def build_conditions(
    phase: Phase, generation: int, previous: list[dict[str, Any]], now: str
) -> list[dict[str, Any]]:
    """metav1.Conditions; lastTransitionTime moves only when a condition's status changes."""
    before = {c.get("type"): c for c in previous or []}
    conditions = []
    for kind, (status, reason, message) in _conditions(phase, generation).items():
        old = before.get(kind)
        since = old["lastTransitionTime"] if old and old.get("status") == status else now
        conditions.append(
            {
                "type": kind,
                "status": status,
                "observedGeneration": generation,
                "lastTransitionTime": since,
                "reason": reason,
                "message": message[:32768],
            }
        )
    return conditions


def compute_status(
    cj: dict[str, Any],
    spec: CompressionJobSpec,
    pool: str,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    now: str,
    workload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole status for the current generation, from its Job (None: not created yet),
    that Job's pods and, for a queued Job, Kueue's Workload. `spec` is cj's spec, parsed."""
    phase, outcome = observe_phase(job, pods, workload)
    status = _status_for(cj, spec, phase, now)
    previous = cj.get("status") or {}
    same_generation = previous.get("observedGeneration") == status["observedGeneration"]
    latest = _by_age(pods)[-1] if pods else None
    runner: dict[str, Any] = {"pool": pool, "attempts": len(pods)}
    if job is not None:
        runner["job"] = job["metadata"]["name"]
    if latest is not None:
        runner["pod"] = latest["metadata"]["name"]
        if node := (latest.get("spec") or {}).get("nodeName"):
            runner["node"] = node
    status["runner"] = runner
    if outcome is not None:
        if outcome.results is not None:
            status["results"] = outcome.results.to_json_dict()
        status["artifacts"] = [a.to_json_dict() for a in outcome.artifacts]
    job_status = (job or {}).get("status") or {}
    start = job_status.get("startTime") or (previous.get("startTime") if same_generation else None)
    if start or (job is not None and not is_suspended(job)):  # a queued Job has not started
        status["startTime"] = start or now
    if phase.phase in TERMINAL:
        finished = job_status.get("completionTime")
        if not finished:
            condition = _job_condition(
                job or {}, "Complete" if phase.phase == SUCCEEDED else "Failed"
            )
            finished = (condition or {}).get("lastTransitionTime")
        status["completionTime"] = (
            finished or (previous.get("completionTime") if same_generation else None) or now
        )
    return status


def operator_failure(
    cj: dict[str, Any],
    spec: CompressionJobSpec | None,
    pool: str,
    reason: str,
    message: str,
    now: str,
) -> dict[str, Any]:
    """Status for a job the operator refuses to run (an unknown node pool, a pool without the
    device the recipe needs, a runner Job the apiserver refused; `spec` None: the spec itself
    is invalid)."""
    return operator_status(cj, spec, pool, Phase(FAILED, reason, message), now)


def operator_status(
    cj: dict[str, Any], spec: CompressionJobSpec | None, pool: str, phase: Phase, now: str
) -> dict[str, Any]:
    """Status for a generation with no runner Job of its own: what the operator decided
    (`phase`), on `pool`."""
    status = _status_for(cj, spec, phase, now)
    previous = cj.get("status") or {}
    same = previous.get("observedGeneration") == status["observedGeneration"]
    status["runner"] = {"pool": pool, "attempts": 0}
    if phase.phase in TERMINAL:
        status["completionTime"] = (previous.get("completionTime") if same else None) or now
    return status


def _status_for(
    cj: dict[str, Any], spec: CompressionJobSpec | None, phase: Phase, now: str
) -> dict[str, Any]:
    """What every status says: generation, phase, recipe (when the spec parses), reason,
    message, conditions."""
    generation = int(cj["metadata"].get("generation", 1))
    previous = cj.get("status") or {}
    same = previous.get("observedGeneration") == generation
    recipe = {"recipe": recipe_label(spec.steps)} if spec is not None else {}
    return {
        "observedGeneration": generation,
        "phase": phase.phase,
        **recipe,
        "reason": phase.reason,
        "message": phase.message,
        "conditions": build_conditions(
            phase, generation, (previous.get("conditions") or []) if same else [], now
        ),
    }


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning `current` into `desired` (None when nothing changes).
    Keys the operator no longer reports are removed (e.g. results of an older generation), at
    every depth: a merge patch merges nested objects, so `runner.pod` of an older generation
    would otherwise survive."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        before = current.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            if (nested := status_patch(before, value)) is not None:
                patch[key] = nested
        elif before != value:
            patch[key] = value
    patch.update({k: None for k in current if k not in desired})
    return patch or None


@dataclass(frozen=True)
class Transition:
    """An Event to post on the CompressionJob."""

    type: str  # Normal or Warning
    reason: str
    message: str


def transition(current: dict[str, Any], desired: dict[str, Any]) -> Transition | None:
    """The Event for a change of phase, reason or generation; None when nothing moved."""
    keys = ("observedGeneration", "phase", "reason")
    if all(current.get(k) == desired.get(k) for k in keys):
        return None
    stalled = any(
        c.get("type") == "Stalled" and c.get("status") == "True"
        for c in desired.get("conditions") or []
    )
    kind = "Warning" if desired["phase"] == FAILED or stalled else "Normal"
    message = (
        f"{desired['phase']} (generation {desired['observedGeneration']}): {desired['message']}"
    )
    return Transition(kind, desired["reason"], message[:1024])
