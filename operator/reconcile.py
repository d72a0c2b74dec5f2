"""Level-based reconcile of one CompressionJob: observe, create what is missing, write status.

Every call computes the desired state from what the apiserver holds now, never from the event
that triggered it, so a missed event, a duplicate one or an operator restart change nothing:
the runner Job's name is deterministic per generation and a 409 means it is already there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.rest import ApiException

from kondense.api.crd import FAILED, PENDING, PLURAL
from kondense.api.errors import BadInput
from kondense.api.manifest import parse_job
from kondense.api.spec import API_GROUP, API_VERSION, KIND, CompressionJobSpec
from kondense.operator import metrics
from kondense.operator.config import OperatorConfig
from kondense.operator.jobs import (
    ANNOTATION_NAME,
    LABEL_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_POOL,
    LABEL_UID,
    MANAGED_BY,
    build_runner_job,
    runner_job_name,
)
from kondense.operator.pools import PoolError, select_node_pool
from kondense.operator.queueing import (
    WORKLOAD_GROUP,
    WORKLOAD_JOB_UID_LABEL,
    WORKLOAD_PLURAL,
    WORKLOAD_VERSIONS,
    is_suspended,
    job_queue,
)
from kondense.operator.status import (
    TERMINAL,
    Phase,
    Transition,
    compute_status,
    operator_failure,
    operator_status,
    status_patch,
    transition,
)

log = logging.getLogger("kondense.operator")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def never_reconciled(cj: Mapping[str, Any]) -> bool:
    """No status written by the operator yet: none at all, or only the CRD's default
    (observedGeneration 0)."""
    return not (cj.get("status") or {}).get("observedGeneration")


def is_fresh(cj: Mapping[str, Any]) -> bool:
    """Never reconciled, and the spec never changed."""
    return never_reconciled(cj) and int(cj["metadata"].get("generation", 1)) == 1


INVALID_SPEC = "InvalidSpec"


def parse_spec(cj: Mapping[str, Any]) -> CompressionJobSpec | str:
    """cj's spec as the typed model, or the problems (one a line, each naming its field, in the
    words `kondense validate` uses) when it does not parse."""
    document = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "spec": cj.get("spec") or {},
    }
    try:
        return parse_job(document, "spec").spec
    except BadInput as error:
        return str(error)


JOB_REJECTED = "JobRejected"
RUNNER_JOB_DELETED = "RunnerJobDeleted"
# What the apiserver answers a Job it will not take (invalid field, admission, quota): the
# same Job is refused the same way next time.
REFUSED = frozenset({400, 403, 422})


def api_message(error: ApiException) -> str:
    """The apiserver's own words from an error response (its Status.message)."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or error.reason or error.status)


# Seconds any one apiserver call of a reconcile may take (connect and read each). A call
# that times out fails the reconcile, which the resync loop retries.
REQUEST_TIMEOUT_S = 30.0

# What the work queue holds: (kind, namespace, name). One queue for every kind the operator
# reconciles, so that a kind's objects never wait behind a queue of their own.
QueueKey = tuple[str, str, str]


class KindReconciler(Protocol):
    """Another kind whose objects the Reconciler's workers reconcile (`add_kind`)."""

    def reconcile_named(
        self, namespace: str, name: str, snapshot: dict[str, Any] | None = None
    ) -> None: ...

    def revisit(self, everything: bool) -> set[tuple[str, str]]:
        """The objects the resync loop queues again: those whose last reconcile failed, and
        with `everything` all those still in flight."""
        ...

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone."""
        ...


def patch_status(
    custom: Any,
    plural: str,
    meta: dict[str, Any],
    patch: dict[str, Any] | None,
    timeout: float | None,
) -> None:
    """Merge-patch the status subresource of the object `meta` names; nothing when `patch` is
    None (the status is already what it should be)."""
    if patch is None:
        return
    custom.patch_namespaced_custom_object_status(
        API_GROUP,
        API_VERSION,
        meta["namespace"],
        plural,
        meta["name"],
        {"status": patch},
        _content_type="application/merge-patch+json",
        _request_timeout=timeout,
    )


class Reconciler:
    """Reconciles CompressionJobs with one ApiClient; safe to call from several threads."""

    def __init__(
        self,
        api_client: client.ApiClient,
        config: OperatorConfig,
        request_timeout: float | None = REQUEST_TIMEOUT_S,
    ) -> None:
        self.api_client = api_client
        self.config = config
        # Every call gets it: a call the apiserver never answers would hold the job's lock.
        self.timeout = request_timeout
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Jobs still in flight, and those whose last reconcile raised: the resync loop
        # revisits them, because kopf does not retry event handlers.
        self._active: set[tuple[str, str]] = set()
        self._failed: set[tuple[str, str]] = set()
        self._queued: set[tuple[str, str]] = set()
        self._started: dict[QueueKey, float] = {}  # reconciles running (any kind), since when
        # The work queue (enqueue, work_forever): objects waiting for a worker, new ones first,
        # keyed by kind too (CompressionJobs, and the kinds add_kind registers).
        self._work = threading.Condition(self._locks_guard)
        self._waiting: set[QueueKey] = set()
        self._new: deque[QueueKey] = deque()
        self._known: deque[QueueKey] = deque()
        self._working: set[QueueKey] = set()  # taken by a worker
        # A new job's body as its watch event delivered it, while nothing newer was heard:
        # the worker reconciles that instead of reading it again (one call fewer to its Job).
        self._snapshots: dict[QueueKey, dict[str, Any]] = {}
        self._kinds: dict[str, KindReconciler] = {}
        # Events are posted in order by one thread, off the path of the status and the Job.
        self._events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._event_poster: threading.Thread | None = None

    def add_kind(self, kind: str, reconciler: KindReconciler) -> None:
        """Let the workers and the resync loop reconcile objects of `kind` too:
        `enqueue(namespace, name, kind=kind)` queues one."""
        self._kinds[kind] = reconciler

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    # --- entry points --------------------------------------------------------------------

    def reconcile_named(
        self, namespace: str, name: str, snapshot: dict[str, Any] | None = None
    ) -> None:
        """Reconcile the CompressionJob `namespace/name` as it is now (gone: nothing to do).

        Requests for a job that already has one waiting are dropped: the waiting one reads
        the object after this request was made, so it sees everything this one would.
        `snapshot`, the body of a job never reconciled (no status, generation 1) as a watch
        event just delivered it, stands for the read: at worst a spec changed since then
        makes a Job of generation 1 that the next event's reconcile replaces."""
        key = (namespace, name)
        with self._locks_guard:
            if key in self._queued:
                return
            self._queued.add(key)
        with self._lock(namespace, name), self._running((KIND, namespace, name)):
            with self._locks_guard:
                self._queued.discard(key)
            try:
                cj: Any = snapshot
                if snapshot is None or not is_fresh(snapshot):
                    cj = self.custom.get_namespaced_custom_object(
                        API_GROUP,
                        API_VERSION,
                        namespace,
                        PLURAL,
                        name,
                        _request_timeout=self.timeout,
                    )
            except ApiException as error:
                if error.status == 404:
                    return
                raise
            else:
                self._reconcile_locked(dict(cj))

    def enqueue(
        self,
        namespace: str,
        name: str,
        new: bool = False,
        snapshot: Mapping[str, Any] | None = None,
        kind: str = KIND,
    ) -> None:
        """Ask a worker (`work_forever`) to reconcile the `kind` (by default a
        CompressionJob) `namespace/name`. However many events ask
        while it waits, it is reconciled once; `new` (a job without status: its runner Job is
        not created yet) goes ahead of the jobs already running, so that applying many jobs
        at once creates their Jobs first. Kopf's handler threads never block on a job's lock.
        A `snapshot` (the event's body) of a fresh job is reconciled as it is, unless another
        request comes while it waits."""
        key = (kind, namespace, name)
        with self._work:
            if key in self._waiting:
                self._snapshots.pop(key, None)  # something changed since: read it again
                return
            self._waiting.add(key)
            if snapshot is not None and is_fresh(snapshot):
                # Read-only, as kopf hands it over: a deep copy cost more CPU than the read.
                self._snapshots[key] = dict(snapshot)
            (self._new if new else self._known).append(key)
            self._work.notify()

    def _next(self) -> tuple[QueueKey, dict[str, Any] | None] | None:
        # A job being reconciled waits in the queue until that reconcile is over.
        for waiting in (self._new, self._known):
            for index, key in enumerate(waiting):
                if key not in self._working:
                    del waiting[index]
                    self._waiting.discard(key)
                    self._working.add(key)
                    return key, self._snapshots.pop(key, None)
        return None

    def work_forever(self, stop: threading.Event) -> None:
        """Reconcile what `enqueue` asks for, until `stop`; run several for concurrency."""
        while not stop.is_set():
            with self._work:
                taken = self._next()
                if taken is None:
                    self._work.wait(1.0)
                    continue
            key, snapshot = taken
            kind, namespace, name = key
            # A CompressionJob's reconcile_named counts its own run (resync calls it too).
            running = self._running(key) if kind != KIND else contextlib.nullcontext()
            try:
                with running:
                    self._reconcile_of(kind)(namespace, name, snapshot=snapshot)
            except Exception as error:  # counted, and retried by the resync loop
                log.warning("reconcile of %s %s/%s failed: %r", kind, namespace, name, error)
            finally:
                with self._work:
                    self._working.discard(key)
                    self._work.notify_all()  # a job waiting behind this one may go

    def _reconcile_of(self, kind: str) -> Callable[..., None]:
        if kind == KIND:
            return self.reconcile_named
        return self._kinds[kind].reconcile_named

    @contextlib.contextmanager
    def _running(self, key: QueueKey) -> Iterator[None]:
        """Counts the reconcile of `key` (kind, namespace, name) as running while inside."""
        with self._locks_guard:
            self._started[key] = time.monotonic()
        try:
            yield
        finally:
            with self._locks_guard:
                self._started.pop(key, None)

    def longest_reconcile(self) -> tuple[float, str]:
        """Seconds the longest-running reconcile of any kind has run (0 when none), and what
        it reconciles ('CompressionSearch ns/name')."""
        now = time.monotonic()
        with self._locks_guard:
            running = [
                (now - started, f"{kind} {ns}/{name}")
                for (kind, ns, name), started in self._started.items()
            ]
        return max(running, default=(0.0, ""))

    def _reconcile_locked(self, cj: dict[str, Any]) -> None:
        meta = cj["metadata"]
        if meta.get("deletionTimestamp"):
            return  # garbage collection removes the Job and its pods via owner references
        key = (meta["namespace"], meta["name"])
        try:
            self._reconcile(cj)
        except Exception as error:
            metrics.RECONCILE_ERRORS.labels(type(error).__name__).inc()
            with self._locks_guard:
                self._failed.add(key)
            raise
        with self._locks_guard:
            self._failed.discard(key)

    def resync(self, everything: bool) -> None:
        """Reconcile again the jobs whose last reconcile failed, and with `everything` all
        jobs still in flight: a level-based safety net for lost events and API errors. Other
        kinds' objects (add_kind) are queued for the workers."""
        for kind, other in self._kinds.items():
            for namespace, name in sorted(other.revisit(everything)):
                self.enqueue(namespace, name, kind=kind)
        with self._locks_guard:
            keys = set(self._failed) | (set(self._active) if everything else set())
        for namespace, name in sorted(keys):
            try:
                self.reconcile_named(namespace, name)
            except Exception as error:  # counted in reconcile(); the next round tries again
                log.warning("resync of %s/%s failed: %s", namespace, name, error)

    def resync_forever(self, interval: float, stop: threading.Event) -> None:
        """Every `interval` seconds retry failed reconciles; every 6th round, all in flight."""
        rounds = 0
        while not stop.wait(interval):
            rounds += 1
            self.resync(everything=rounds % 6 == 0)

    def forget(self, namespace: str, name: str, kind: str = KIND) -> None:
        """The CompressionJob (or object of `kind`) is gone: drop its metrics and lock."""
        if kind != KIND:
            self._kinds[kind].forget(namespace, name)
            return
        metrics.TABLE.forget(namespace, name)
        with self._locks_guard:
            self._locks.pop((namespace, name), None)
            self._active.discard((namespace, name))
            self._failed.discard((namespace, name))

    # --- the loop body -------------------------------------------------------------------

    def _reconcile(self, cj: dict[str, Any]) -> None:
        meta = cj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        generation = int(meta.get("generation", 1))
        current = cj.get("status") or {}
        now = utc_now()
        # Never reconciled (no status, or only the CRD's default): no Job of an older
        # generation, and none of this one unless a killed operator created it, which the 409
        # on create finds. Two calls fewer on the path from apply to runner Job.
        fresh = is_fresh(cj)
        jobs = [] if fresh else self._owned_jobs(namespace, meta["uid"])
        self._delete_older_generations(jobs, generation)
        job_name = runner_job_name(name, generation)
        job = next((j for j in jobs if j["metadata"]["name"] == job_name), None)
        if current.get("observedGeneration") == generation and current.get("phase") in TERMINAL:
            # A generation's terminal status is final: its runner pod may be gone (pod GC, node
            # scale-down, a manual delete) and with it the termination message, or its pool may
            # have left the configuration; neither may rewrite or erase what it found.
            self._record_finished(cj)
            return
        spec = parse_spec(cj)
        if isinstance(spec, str):
            # The CRD's schema admits almost nothing the models refuse; what it lets through
            # (an older CRD, a rule only the models know) fails here, once, in the same words.
            raw_pool = str((cj.get("spec") or {}).get("nodePool") or "")
            self._write(cj, current, operator_failure(cj, None, raw_pool, INVALID_SPEC, spec, now))
            return
        if job is None and (current.get("runner") or {}).get("job") == job_name:
            # This generation's Job was created (the status names it) and is gone unfinished:
            # one runner Job per generation, ever, so the recipe is not run again unasked.
            message = (
                f"the runner Job {job_name} was deleted before it finished; change the spec "
                "(e.g. timeoutSeconds) to run the recipe again"
            )
            pool_label = str((current.get("runner") or {}).get("pool") or "")
            failure = operator_failure(cj, spec, pool_label, RUNNER_JOB_DELETED, message, now)
            self._write(cj, current, failure)
            return
        try:
            pool_name, pool = select_node_pool(spec, self.config)
        except PoolError as error:
            if job is None and fresh:
                # Fresh skipped the listing; a killed operator may have created the Job before
                # the pool left the configuration. Look before failing what already runs.
                jobs = self._owned_jobs(namespace, meta["uid"])
                job = next((j for j in jobs if j["metadata"]["name"] == job_name), None)
            if job is None:
                failure = operator_failure(
                    cj, spec, spec.node_pool or "", error.reason, str(error), now
                )
                self._write(cj, current, failure)
                return
            # Created before the configuration changed: report the pool it runs on.
            pool_name = job["metadata"]["labels"].get(LABEL_POOL, "")
        if job is None:
            manifest = build_runner_job(
                meta, spec, pool_name, pool, self.config.backoff_limit, created=time.time()
            )
            created = self._create_job(manifest, meta["uid"])
            if isinstance(created, Phase):
                self._write(cj, current, operator_status(cj, spec, pool_name, created, now))
                return
            job = created
        # Their events reconcile the job again.
        pods = [] if fresh else self._pods(namespace, meta["uid"], generation)
        # Fresh: the Job was created just now, before Kueue could make its Workload.
        queued = not fresh and is_suspended(job) and job_queue(job) is not None
        workload = self._workload(job) if queued else None
        self._write(cj, current, compute_status(cj, spec, pool_name, job, pods, now, workload))

    def _record_finished(self, cj: dict[str, Any]) -> None:
        meta = cj["metadata"]
        metrics.TABLE.record(meta["namespace"], meta["name"], cj.get("status") or {})
        with self._locks_guard:
            self._active.discard((meta["namespace"], meta["name"]))

    def _write(self, cj: dict[str, Any], current: dict[str, Any], desired: dict[str, Any]) -> None:
        meta = cj["metadata"]
        patch_status(self.custom, PLURAL, meta, status_patch(current, desired), self.timeout)
        moved = transition(current, desired)
        if moved is not None:
            self.post_event(cj, moved)
            log.info("%s/%s: %s", meta["namespace"], meta["name"], moved.message)
        metrics.TABLE.record(meta["namespace"], meta["name"], desired, previous=current)
        key = (meta["namespace"], meta["name"])
        with self._locks_guard:
            if desired.get("phase") in TERMINAL:
                self._active.discard(key)
            else:
                self._active.add(key)

    # --- children ------------------------------------------------------------------------

    def _owned_jobs(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        listing: Any = self.batch.list_namespaced_job(  # an HTTP response, not a V1JobList
            namespace,
            label_selector=f"{LABEL_UID}={uid}",
            _request_timeout=self.timeout,
            _preload_content=False,  # plain JSON: the client's models cost CPU we do not need
        )
        return list(json.loads(listing.data)["items"])

    def _pods(self, namespace: str, uid: str, generation: int) -> list[dict[str, Any]]:
        selector = f"{LABEL_UID}={uid},{LABEL_GENERATION}={generation}"
        listing: Any = self.core.list_namespaced_pod(
            namespace,
            label_selector=selector,
            _request_timeout=self.timeout,
            _preload_content=False,
        )
        return list(json.loads(listing.data)["items"])

    def _workload(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """Kueue's Workload for a queued runner Job, for its words on why it waits; None when
        there is none yet, or Kueue's API is not served or not granted (the status then says
        the Job waits, without Kueue's reason)."""
        meta = job["metadata"]
        for version in WORKLOAD_VERSIONS:
            try:
                listing: Any = self.custom.list_namespaced_custom_object(
                    WORKLOAD_GROUP,
                    version,
                    meta["namespace"],
                    WORKLOAD_PLURAL,
                    label_selector=f"{WORKLOAD_JOB_UID_LABEL}={meta['uid']}",
                    _request_timeout=self.timeout,
                )
            except ApiException as error:
                if error.status == 404:
                    continue  # this version (or Kueue) is not served here
                if error.status == 403:
                    return None
                raise
            items = listing.get("items") or []
            return dict(items[0]) if items else None
        return None

    def _create_job(self, manifest: dict[str, Any], uid: str) -> dict[str, Any] | Phase:
        """The runner Job, created or (on 409) found; or, when the name is taken by a Job that is
        not this CompressionJob's, why it must wait."""
        meta = manifest["metadata"]
        # Through the client's generic path (/apis/batch/v1/namespaces/<ns>/jobs), plain JSON
        # both ways: its typed path validates the manifest into models and the answer back,
        # which took most of the CPU a new job costs. The apiserver validates instead, strictly.
        jobs = ("batch", "v1", meta["namespace"], "jobs")
        try:
            created: Any = self.custom.create_namespaced_custom_object(
                *jobs, manifest, field_validation="Strict", _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status in REFUSED:
                return Phase(
                    FAILED,
                    JOB_REJECTED,
                    f"the apiserver refused the runner Job {meta['name']}: {api_message(error)}",
                )
            if error.status != 409:
                raise
            created = self.custom.get_namespaced_custom_object(
                *jobs, meta["name"], _request_timeout=self.timeout
            )
        job: dict[str, Any] = created
        labels = job["metadata"].get("labels") or {}
        if labels.get(LABEL_UID) == uid:
            return job  # created by an earlier run of this operator, or by a concurrent event
        return self._clear_foreign_job(job)

    def _clear_foreign_job(self, job: dict[str, Any]) -> Phase:
        """A Job holding this generation's name for another object: a runner Job of an earlier
        CompressionJob of the same name (deleted, so this one could be created) goes; anything
        else is someone else's and stalls the job until it is renamed or removed."""
        meta = job["metadata"]
        if (meta.get("labels") or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
            return Phase(
                PENDING,
                "JobNameTaken",
                f"a Job named {meta['name']} that kondense did not create is in the way; delete"
                " or rename it, and the runner Job is created",
                stalled=True,
            )
        if not meta.get("deletionTimestamp"):
            try:
                self.batch.delete_namespaced_job(
                    meta["name"],
                    meta["namespace"],
                    body=client.V1DeleteOptions(
                        propagation_policy="Background",
                        preconditions=client.V1Preconditions(uid=meta["uid"]),
                    ),
                    _request_timeout=self.timeout,
                )
            except ApiException as error:
                if error.status not in (404, 409):  # gone already, or replaced meanwhile
                    raise
        # Its DELETED event reconciles this job again, and the resync loop is the backstop.
        return Phase(
            PENDING,
            "ReplacingStaleJob",
            f"the runner Job {meta['name']} of an earlier CompressionJob of this name is being"
            " deleted; this job's runner Job follows",
        )

    def _delete_older_generations(self, jobs: list[dict[str, Any]], generation: int) -> None:
        """A spec change re-runs the recipe: the Job of an older generation and its pods go."""
        for job in jobs:
            meta = job["metadata"]
            if meta.get("labels", {}).get(LABEL_GENERATION) == str(generation):
                continue
            if meta.get("deletionTimestamp"):
                continue
            try:
                # Jobs default to orphaning their pods; Background deletes them too.
                self.batch.delete_namespaced_job(
                    meta["name"],
                    meta["namespace"],
                    propagation_policy="Background",
                    _request_timeout=self.timeout,
                )
            except ApiException as error:
                if error.status != 404:
                    raise

    def post_event(self, cj: dict[str, Any], moved: Transition, kind: str = KIND) -> None:
        """Post `moved` as a core v1 Event on the object `cj` of `kind`, from one thread off
        the reconcile, in order."""
        meta = cj["metadata"]
        now = datetime.now(UTC)
        event = {
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": kind,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": moved.type,
            "reason": moved.reason,
            "message": moved.message,
            "source": {"component": "kondense-operator"},
            "reportingComponent": "kondense.dev/operator",
            "reportingInstance": "kondense-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with self._locks_guard:
            if self._event_poster is None:
                self._event_poster = threading.Thread(
                    target=self._post_events_forever, name="events", daemon=True
                )
                self._event_poster.start()
        self._events.put(event)

    def _post_events_forever(self) -> None:
        while True:
            event = self._events.get()
            try:
                self.core.create_namespaced_event(
                    event["metadata"]["namespace"],
                    event,  # type: ignore[arg-type]
                    _request_timeout=self.timeout,
                )
            except Exception as error:  # an Event is a courtesy; the status is the record
                name = event["involvedObject"]["name"]
                log.warning("could not post an Event on %s: %r", name, error)


def owner_name(body: Mapping[str, Any]) -> str | None:
    """The CompressionJob a runner Job or pod belongs to (from the annotation the operator sets)."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    name = annotations.get(ANNOTATION_NAME)
    return str(name) if name else None
