"""Writes the Argo CD health check's tests (charts/kondense/argocd/) from the operator's own
status functions: one CompressionJob per phase and per stalled cause, its status made by
`compute_status` / `operator_failure` from a Job and pods as the cluster reports them, and
the health Argo CD must show for it. Also the argocd-cm patch that carries health.lua.

    .venv/bin/python tests/gitops/health_testdata.py   # rewrite; a test fails when stale
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from kondense.api.crd import FAILED, PENDING, RUNNING
from kondense.api.outcome import Artifact, Outcome, termination_message
from kondense.api.spec import API_GROUP, API_VERSION, KIND, CompressionJobSpec
from kondense.operator.queueing import QUEUE_LABEL
from kondense.operator.status import compute_status, operator_failure

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "charts" / "kondense" / "argocd"
# The argocd-cm key Argo CD reads a custom health check of group kondense.dev, kind
# CompressionJob from (resource.customizations.health.<group>_<kind>).
HEALTH_KEY = f"resource.customizations.health.{API_GROUP}_{KIND}"

START = "2026-01-01T00:00:00Z"
NOW = "2026-01-01T00:10:00Z"
STEPS = [{"export": {}}, {"optimize": {}}, {"quantize": {"mode": "dynamic"}}]
MANIFEST_SPEC = {
    "model": {"uri": "s3://models/bert/"},
    "steps": STEPS,
    "output": {"uri": "s3://out/bert-int8/"},
}
SPEC = CompressionJobSpec.model_validate(MANIFEST_SPEC)


def compression_job(name: str, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"00000000-0000-4000-8000-{len(name):012d}",
            "generation": generation,
            "creationTimestamp": START,
        },
        "spec": MANIFEST_SPEC,
    }


def runner_job(name: str, condition: str | None = None, reason: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": START}
    if condition is not None:
        status["conditions"] = [
            {
                "type": condition,
                "status": "True",
                "reason": reason,
                "message": {
                    "DeadlineExceeded": "Job was active longer than specified deadline"
                }.get(reason, ""),
                "lastTransitionTime": "2026-01-01T00:05:00Z",
            }
        ]
    return {"metadata": {"name": f"{name}-g1"}, "status": status}


def queued_job(name: str, queue: str) -> dict[str, Any]:
    """A runner Job created suspended for Kueue, as the operator creates it for a queued pool:
    not started, so no pods."""
    return {
        "metadata": {"name": f"{name}-g1", "labels": {QUEUE_LABEL: queue}},
        "spec": {"suspend": True},
        "status": {},
    }


def runner_pod(name: str, phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{name}-g1-x7k2p", "creationTimestamp": "2026-01-01T00:00:01Z"},
        "spec": {"nodeName": "cpu-1"} if phase != "Pending" else {},
        "status": {"phase": phase, **status},
    }


def terminated(outcome: Outcome | None = None, **state: Any) -> dict[str, Any]:
    if outcome is not None:
        state["message"] = termination_message(outcome)
    return {"containerStatuses": [{"name": "runner", "state": {"terminated": state}}]}


SUCCESS = Outcome(
    succeeded=True,
    reason="Succeeded",
    message="4.00x smaller, 2.00x faster, accuracy 0.9800 (-0.0100)",
    artifacts=[
        Artifact(name="model.onnx", uri="s3://out/bert-int8/model.onnx", sha256="ab", bytes=400)
    ],
)
BAD_INPUT = Outcome(
    succeeded=False,
    reason="BadInput",
    message="spec.model.uri: s3://models/bert/ holds no model file (model.onnx, *.pt, *.ts)",
)
UNSCHEDULABLE = {
    "conditions": [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        }
    ]
}
# Kueue's Workload for a Job its ClusterQueue has no quota for yet, in Kueue's own words.
PENDING_WORKLOAD = {
    "status": {
        "conditions": [
            {
                "type": "QuotaReserved",
                "status": "False",
                "reason": "Pending",
                "message": "couldn't assign flavors to pod set main: insufficient unused quota"
                " for cpu in flavor default-flavor, 100m more needed",
            }
        ]
    }
}
IMAGE_PULL = {
    "containerStatuses": [
        {
            "name": "runner",
            "image": "registry.example.com/kondense-runner:typo",
            "state": {
                "waiting": {
                    "reason": "ImagePullBackOff",
                    "message": 'Back-off pulling image "registry.example.com/kondense-runner:typo"',
                }
            },
        }
    ]
}


def observed(
    name: str,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    workload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cj = compression_job(name)
    cj["status"] = compute_status(cj, SPEC, "cpu", job, pods, NOW, workload)
    return cj


def cases() -> list[tuple[str, dict[str, Any], str]]:
    """(name, CompressionJob, the health Argo CD must show)."""
    refused = compression_job("unknown-pool")
    refused["status"] = operator_failure(
        refused,
        SPEC,
        "gpu-a100",
        "UnknownNodePool",
        "spec.nodePool gpu-a100 is not a node pool of the operator's configuration (cpu, gpu)",
        NOW,
    )
    done = observed(
        "succeeded",
        runner_job("succeeded", "Complete"),
        [runner_pod("succeeded", "Succeeded", **terminated(SUCCESS, exitCode=0))],
    )
    # The user changed the spec after it succeeded: the operator has not seen generation 2.
    changed = compression_job("spec-changed", generation=2)
    changed["status"] = {**done["status"], "runner": {"pool": "cpu", "attempts": 1}}
    # Just applied: the apiserver fills in the CRD's status default, nothing else.
    new = {**compression_job("new"), "status": {"observedGeneration": 0}}
    return [
        ("new", new, "Progressing"),
        ("pending-creating-job", observed("creating-job", None, []), "Progressing"),
        (
            "pending-pod",
            observed(
                "pod-pending", runner_job("pod-pending"), [runner_pod("pod-pending", PENDING)]
            ),
            "Progressing",
        ),
        # Waiting for quota is not stuck: Kueue starts the Job when its ClusterQueue has room.
        (
            "pending-queued",
            observed("queued", queued_job("queued", "team-a"), [], PENDING_WORKLOAD),
            "Progressing",
        ),
        (
            "stalled-unschedulable",
            observed(
                "unschedulable",
                runner_job("unschedulable"),
                [runner_pod("unschedulable", PENDING, **UNSCHEDULABLE)],
            ),
            "Degraded",
        ),
        (
            "stalled-image-pull",
            observed(
                "image-pull",
                runner_job("image-pull"),
                [runner_pod("image-pull", PENDING, **IMAGE_PULL)],
            ),
            "Degraded",
        ),
        (
            "running",
            observed("running", runner_job("running"), [runner_pod("running", RUNNING)]),
            "Progressing",
        ),
        ("succeeded", done, "Healthy"),
        (
            "failed-bad-input",
            observed(
                "bad-input",
                runner_job("bad-input", "Failed", "PodFailurePolicy"),
                [runner_pod("bad-input", FAILED, **terminated(BAD_INPUT, exitCode=2))],
            ),
            "Degraded",
        ),
        (
            "failed-deadline",
            observed(
                "deadline",
                runner_job("deadline", "Failed", "DeadlineExceeded"),
                [runner_pod("deadline", FAILED, **terminated(exitCode=137))],
            ),
            "Degraded",
        ),
        ("failed-unknown-pool", refused, "Degraded"),
        ("generation-not-observed", changed, "Progressing"),
    ]


def message(cj: dict[str, Any]) -> str:
    """What health.lua says: "PHASE (REASON): MESSAGE", the reason left out when it is the
    phase; a waiting line while the operator has not observed the generation."""
    status = cj.get("status") or {}
    if "observedGeneration" not in status:
        return "waiting for the kondense operator"
    generation = cj["metadata"]["generation"]
    if status["observedGeneration"] < generation:
        return f"waiting for the kondense operator to observe generation {generation}"
    phase, reason = status["phase"], status["reason"]
    said = phase if reason in ("", phase) else f"{phase} ({reason})"
    return f"{said}: {status['message']}"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the Lua script) as literal blocks, readable in the ConfigMap."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)


def files() -> dict[Path, str]:
    """Every generated file under charts/kondense/argocd/ and its text."""
    out: dict[Path, str] = {}
    tests = []
    for name, cj, health in cases():
        out[ARGOCD / "testdata" / f"{name}.yaml"] = dump(cj)
        tests.append(
            {
                "healthStatus": {"status": health, "message": message(cj)},
                "inputPath": f"testdata/{name}.yaml",
            }
        )
    out[ARGOCD / "health_test.yaml"] = dump({"tests": tests})
    patch = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm"},
        "data": {HEALTH_KEY: (ARGOCD / "health.lua").read_text()},
    }
    header = (
        "# Generated by tests/gitops/health_testdata.py from health.lua. Merge it into Argo CD's\n"
        "# settings: kubectl -n argocd patch configmap argocd-cm --patch-file <this file>\n"
    )
    out[ARGOCD / "argocd-cm.yaml"] = header + dump(patch)
    return out


def main() -> int:
    written = files()
    for stale in (ARGOCD / "testdata").glob("*.yaml"):
        if stale not in written:
            stale.unlink()
    for path, text in written.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
