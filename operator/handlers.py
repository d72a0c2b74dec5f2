"""Thin kopf handlers: every event about a CompressionJob, its runner Job or its pods
queues a reconcile of that CompressionJob from scratch (see reconcile.py; main() runs the
Reconciler's workers). Every event about a CompressionSearch, or about a CompressionJob one
owns, queues a reconcile of that search (search.py) on the same workers.

The Reconciler lives in kopf's memo: main() passes `kopf.Memo(reconciler=...)` to kopf.run,
and kopf hands every handler a (shallow) copy of it."""

from __future__ import annotations

from typing import Any

import kopf

from kondense.api.crd import PLURAL
from kondense.api.search import LABEL_SEARCH, SEARCH_KIND, SEARCH_PLURAL
from kondense.api.spec import API_GROUP, API_VERSION
from kondense.operator.jobs import LABEL_MANAGED_BY, MANAGED_BY
from kondense.operator.reconcile import Reconciler, never_reconciled, owner_name

MEMO_KEY = "reconciler"
# A reconcile makes a handful of apiserver calls, each bounded by REQUEST_TIMEOUT_S; one that
# runs this long is stuck (native code, a lock): the liveness probe fails and restarts us.
STUCK_RECONCILE_S = 300.0
_CHILDREN = {LABEL_MANAGED_BY: MANAGED_BY}


def _reconciler(memo: kopf.Memo) -> Reconciler:
    reconciler = memo.get(MEMO_KEY)
    if not isinstance(reconciler, Reconciler):
        raise kopf.PermanentError("the operator was started without a configuration")
    return reconciler


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def compression_job_event(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    """Created, changed, deleted, or listed at (re)start: reconcile it as it is now."""
    meta = body["metadata"]
    if type == "DELETED":
        _reconciler(memo).forget(meta["namespace"], meta["name"])
        return
    observed = (body.get("status") or {}).get("observedGeneration")
    if type == "MODIFIED" and observed is not None and observed == meta.get("generation"):
        # The operator's own status write (or a change outside spec): the reconcile that wrote
        # it saw what this one would; events of its Job and pods, a restart's listing and the
        # resync loop cover the rest. A quarter fewer apiserver calls per job.
        return
    # No status yet: its runner Job is still to be created, ahead of the jobs in flight, from
    # the body this event brought (no second read on the way from apply to runner Job).
    new = never_reconciled(body)
    _reconciler(memo).enqueue(
        meta["namespace"], meta["name"], new=new, snapshot=body if new else None
    )


@kopf.on.event("batch", "v1", "jobs", labels=_CHILDREN)
def runner_job_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A runner Job changed (created, active, complete, failed): reconcile its owner."""
    _reconcile_owner(body, memo)


@kopf.on.event("", "v1", "pods", labels=_CHILDREN)
def runner_pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A runner pod was scheduled, started or terminated: reconcile its owner."""
    _reconcile_owner(body, memo)


def _reconcile_owner(body: kopf.Body, memo: kopf.Memo) -> None:
    name = owner_name(body)
    if name is not None:
        _reconciler(memo).enqueue(body["metadata"]["namespace"], name)


@kopf.on.event(API_GROUP, API_VERSION, SEARCH_PLURAL)
def compression_search_event(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    """A search created, changed, deleted, or listed at (re)start: reconcile it as it is now."""
    meta = body["metadata"]
    reconciler = _reconciler(memo)
    if type == "DELETED":
        reconciler.forget(meta["namespace"], meta["name"], kind=SEARCH_KIND)
        return
    observed = (body.get("status") or {}).get("observedGeneration")
    if type == "MODIFIED" and observed is not None and observed == meta.get("generation"):
        return  # the operator's own status write: its children's events drive the search on
    reconciler.enqueue(
        meta["namespace"], meta["name"], new=never_reconciled(body), kind=SEARCH_KIND
    )


@kopf.on.event(API_GROUP, API_VERSION, PLURAL, labels={LABEL_SEARCH: kopf.PRESENT})
def search_child_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A search's CompressionJob was created, moved on, finished or was deleted: reconcile the
    search (named by the child's label), which may start the next candidate."""
    meta = body["metadata"]
    search = (meta.get("labels") or {}).get(LABEL_SEARCH)
    if search:
        _reconciler(memo).enqueue(meta["namespace"], search, kind=SEARCH_KIND)


@kopf.on.probe(id="longestReconcileSeconds")
def reconcile_probe(memo: kopf.Memo, **_: Any) -> float:
    """Part of /healthz: how long the longest-running reconcile has run; fails (so kopf's
    endpoint answers 500) once one has run STUCK_RECONCILE_S."""
    seconds, what = _reconciler(memo).longest_reconcile()
    if seconds >= STUCK_RECONCILE_S:
        raise kopf.PermanentError(f"the reconcile of {what} has run for {seconds:.0f} s")
    return round(seconds, 1)
