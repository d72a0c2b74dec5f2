"""Thin kopf handlers: every event about a CompressionJob, its runner Job or its pods
reconciles that CompressionJob from scratch (see reconcile.py)."""

from __future__ import annotations

from typing import Any

import kopf

from kondense.api.crd import PLURAL
from kondense.api.spec import API_GROUP, API_VERSION
from kondense.operator.jobs import LABEL_MANAGED_BY, MANAGED_BY
from kondense.operator.reconcile import Reconciler, owner_name

# Set by main() before kopf starts.
RECONCILER: Reconciler | None = None
_CHILDREN = {LABEL_MANAGED_BY: MANAGED_BY}


def _reconciler() -> Reconciler:
    if RECONCILER is None:
        raise kopf.PermanentError("the operator was started without a configuration")
    return RECONCILER


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def compression_job_event(body: kopf.Body, type: str, **_: Any) -> None:
    """Created, changed, deleted, or listed at (re)start: reconcile it as it is now."""
    meta = body["metadata"]
    if type == "DELETED":
        _reconciler().forget(meta["namespace"], meta["name"])
        return
    _reconciler().reconcile_named(meta["namespace"], meta["name"])


@kopf.on.event("batch", "v1", "jobs", labels=_CHILDREN)
def runner_job_event(body: kopf.Body, **_: Any) -> None:
    """A runner Job changed (created, active, complete, failed): reconcile its owner."""
    _reconcile_owner(body)


@kopf.on.event("", "v1", "pods", labels=_CHILDREN)
def runner_pod_event(body: kopf.Body, **_: Any) -> None:
    """A runner pod was scheduled, started or terminated: reconcile its owner."""
    _reconcile_owner(body)


def _reconcile_owner(body: kopf.Body) -> None:
    name = owner_name(body)
    if name is not None:
        _reconciler().reconcile_named(body["metadata"]["namespace"], name)
