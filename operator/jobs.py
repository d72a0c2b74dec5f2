"""The runner Job for one generation of a CompressionJob: a pure manifest builder.

How the spec reaches the runner: the whole CompressionJob (apiVersion, kind, metadata name/
namespace/uid/generation, spec) travels as JSON in the container's KONDENSE_JOB variable, and
the runner starts `kondense run --job-env KONDENSE_JOB --termination-log /dev/termination-log`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from kondense.api.errors import (
    ALLOW_HTTP_ENV,
    ALLOW_PRIVATE_ENV,
    DEADLINE_ENV,
    DOWNLOAD_TIMEOUT_ENV,
    EXIT_BAD_INPUT,
    EXIT_REJECTED,
    EXIT_TIMED_OUT,
    MAX_DOWNLOAD_BYTES_ENV,
)
from kondense.api.spec import API_GROUP, API_VERSION, DEFAULT_PVC_ROOT, KIND, CompressionJobSpec
from kondense.operator.config import JOB_ENV, TERMINATION_LOG, PoolConfig
from kondense.operator.queueing import QUEUE_LABEL, queue_name

CONTAINER = "runner"
RUNNER_UID = 65532  # the distroless "nonroot" user
PVC_ROOT = DEFAULT_PVC_ROOT  # where pvc:// claims are mounted; the runner's default too
WORK_DIR = "/var/lib/kondense/work"
RUNNER_DEADLINE_GRACE_SECONDS = 60

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kondense-operator"
LABEL_UID = "kondense.dev/compressionjob-uid"
LABEL_GENERATION = "kondense.dev/generation"
LABEL_POOL = "kondense.dev/pool"
ANNOTATION_NAME = "kondense.dev/compressionjob"

_NAME_LIMIT = 63  # the Job controller copies the name into a label value


def runner_job_name(name: str, generation: int) -> str:
    """`<name>-g<generation>`, shortened with a hash of the name when over 63 characters.

    Deterministic, so a restarted operator finds the Job it created instead of adding one."""
    suffix = f"-g{generation}"
    if len(name) + len(suffix) <= _NAME_LIMIT:
        return name + suffix
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = _NAME_LIMIT - len(suffix) - len(digest) - 1
    return f"{name[:keep].rstrip('-.')}-{digest}{suffix}"


def pvc_claims(spec: CompressionJobSpec) -> dict[str, bool]:
    """Claims named by pvc:// URIs in the spec -> whether the runner writes to them."""
    claims: dict[str, bool] = {}
    for _, uri, writes in spec.uris():
        if uri.startswith("pvc://"):
            claim = uri.removeprefix("pvc://").split("/", 1)[0]
            claims[claim] = claims.get(claim, False) or writes
    return claims


_VOLUME_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def claim_volume_name(claim: str) -> str:
    """`pvc-<claim>`, or `pvc-<hash>` for a claim name (a DNS subdomain: dots, up to 253
    characters) that is no valid volume name (a DNS label of at most 63)."""
    name = f"pvc-{claim}"
    if len(name) <= 63 and _VOLUME_NAME.fullmatch(claim):
        return name
    return f"pvc-{hashlib.sha256(claim.encode()).hexdigest()[:16]}"


def _merged(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`defaults` with the pool's `overrides`; an override of None removes the key (a
    platform that assigns UIDs, such as OpenShift's restricted-v2, sets runAsUser: null)."""
    merged = {**defaults, **overrides}
    return {key: value for key, value in merged.items() if value is not None}


def fetch_policy_env(pool: PoolConfig, spec: CompressionJobSpec) -> list[dict[str, str]]:
    """The pool's download policy, as the runner reads it (runners/io/fetch.py)."""
    cap = pool.max_download_bytes
    if spec.storage is not None and spec.storage.max_download_bytes is not None:
        cap = spec.storage.max_download_bytes
    return [
        {"name": ALLOW_HTTP_ENV, "value": "1" if pool.allow_http else "0"},
        {"name": ALLOW_PRIVATE_ENV, "value": "1" if pool.allow_private_networks else "0"},
        {"name": MAX_DOWNLOAD_BYTES_ENV, "value": str(cap)},
        {"name": DOWNLOAD_TIMEOUT_ENV, "value": str(pool.download_timeout_seconds)},
    ]


def _resources(pool: PoolConfig, spec: CompressionJobSpec) -> dict[str, dict[str, str]]:
    """The pool's resources, with spec.resources cpu/memory as both request and limit."""
    resources = {kind: dict(values) for kind, values in pool.resources.items()}
    wanted = spec.resources.model_dump() if spec.resources is not None else {}
    for key, value in wanted.items():
        if value:
            resources.setdefault("requests", {})[key] = str(value)
            resources.setdefault("limits", {})[key] = str(value)
    return resources


def _runner_manifest(meta: dict[str, Any], spec: CompressionJobSpec) -> str:
    """The manifest the runner reads: the spec as the user wrote it (fields left unset stay
    unset, so the runner applies its own defaults), after the operator validated it."""
    return json.dumps(
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {
                key: meta[key] for key in ("name", "namespace", "uid", "generation") if key in meta
            },
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def build_runner_job(
    meta: dict[str, Any],
    spec: CompressionJobSpec,
    pool_name: str,
    pool: PoolConfig,
    backoff_limit: int = 2,
    created: float | None = None,
) -> dict[str, Any]:
    """The batch/v1 Job that runs the recipe `spec` of the CompressionJob with metadata `meta`
    on `pool`, owned by that CompressionJob.

    Bad input and rejected results (runner exit codes 2 and 3) fail the Job at once; other
    failures are retried up to `backoff_limit` times. The pod meets the restricted Pod
    Security Standard and gets no service-account token. `created` (Unix seconds, when the
    Job is created) fixes the runner's absolute deadline, the same for every retry. A job with
    a Kueue queue (operator/queueing.py) gets the queue-name label and is created suspended;
    its deadline counts from when Kueue starts it."""
    generation = int(meta.get("generation", 1))
    name = runner_job_name(meta["name"], generation)
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/name": "kondense-runner",
        LABEL_UID: meta["uid"],
        LABEL_GENERATION: str(generation),
        LABEL_POOL: pool_name,
    }
    queue = queue_name(spec, pool)
    if queue:
        labels[QUEUE_LABEL] = queue
    labels = {**pool.job_labels, **labels}  # the pool's extras never replace kondense's own
    annotations = {**pool.job_annotations, ANNOTATION_NAME: meta["name"]}
    claims = pvc_claims(spec)
    env = [
        {"name": JOB_ENV, "value": _runner_manifest(meta, spec)},
        {"name": "KONDENSE_PVC_ROOT", "value": PVC_ROOT},
        # The root filesystem is read-only: caches and temporary files go to /tmp.
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
    ]
    if created is not None and not queue:
        # A queued Job may wait longer than its timeout before Kueue starts it: its runner
        # counts timeoutSeconds from its own start, and the Job's activeDeadlineSeconds (its
        # clock restarts when Kueue unsuspends it) is the backstop.
        env.append({"name": DEADLINE_ENV, "value": f"{created + spec.timeout_seconds:.0f}"})
    env += [{"name": key, "value": value} for key, value in sorted(pool.env.items())]
    env += fetch_policy_env(pool, spec)
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "work", "mountPath": WORK_DIR},
    ] + [
        {
            "name": claim_volume_name(claim),
            "mountPath": f"{PVC_ROOT}/{claim}",
            "readOnly": not writes,
        }
        for claim, writes in sorted(claims.items())
    ]
    volumes = [
        {"name": "tmp", "emptyDir": {"sizeLimit": pool.tmp_size_limit}},
        {"name": "work", "emptyDir": {"sizeLimit": pool.work_size_limit}},
    ] + [
        {
            "name": claim_volume_name(claim),
            "persistentVolumeClaim": {"claimName": claim, "readOnly": not writes},
        }
        for claim, writes in sorted(claims.items())
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": pool.image,
        "imagePullPolicy": "IfNotPresent",
        "command": pool.runner_command(),
        "workingDir": pool.working_dir or WORK_DIR,
        "env": env,
        "resources": _resources(pool, spec),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        # A runner that dies before writing its outcome still leaves its last log lines.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _merged(
            {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            pool.container_security_context,
        ),
    }
    env_from = [dict(source) for source in pool.env_from]
    if spec.storage is not None and spec.storage.secret_ref is not None:
        # A name only: the kubelet resolves it in the pod's (the job's) namespace, so a job
        # can never reach another namespace's Secret, and the operator never reads it.
        env_from.append({"secretRef": {"name": spec.storage.secret_ref.name}})
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # retries are new pods, counted by backoffLimit
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _merged(
            {
                "runAsNonRoot": True,
                "runAsUser": RUNNER_UID,
                "runAsGroup": RUNNER_UID,
                "fsGroup": RUNNER_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            pool.pod_security_context,
        ),
        "containers": [container],
        "volumes": volumes,
    }
    service_account = spec.service_account_name or pool.service_account_name
    if service_account:
        # Its cloud identity (IRSA, Workload Identity) reaches the buckets. The API token
        # stays unmounted: IRSA's webhook projects its own token volume.
        pod_spec["serviceAccountName"] = service_account
    if pool.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in pool.image_pull_secrets]
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in pool.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": f"{API_GROUP}/{API_VERSION}",
                    "kind": KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            # Queued: Kueue unsuspends it on admission (operator/queueing.py).
            **({"suspend": True} if queue else {}),
            "backoffLimit": backoff_limit,
            # The runner keeps timeoutSeconds itself and says where the time went; the Job's
            # deadline is the backstop for a runner that cannot (stuck in native code).
            "activeDeadlineSeconds": spec.timeout_seconds + RUNNER_DEADLINE_GRACE_SECONDS,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_TIMED_OUT],
                        },
                    },
                    # An evicted or preempted pod is not the recipe's fault.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }
