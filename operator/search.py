"""Level-based reconcile of one CompressionSearch: its children are CompressionJobs, one per
(candidate, round), that the search owns.

Every call starts from what the apiserver holds now: it lists the search's children, turns
each child's status into a `Measured`, asks `next_children` (api/search.py) what to start, creates
those children and writes the status. Children are named by candidate and round
(`child_name`), so a reconcile repeated after an operator restart finds what an earlier one
created (a 409) and starts nothing twice; garbage collection removes the children with the
search (ownerReferences, controller and blockOwnerDeletion).

The workers, the queue and the resync loop are the Reconciler's (reconcile.py): a search is
queued as (CompressionSearch, namespace, name) and reconciled by `SearchReconciler`, which
registers itself with `Reconciler.add_kind`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from kondense.api.crd import FAILED, PENDING, PLURAL, RUNNING, SUCCEEDED
from kondense.api.manifest import validation_problems
from kondense.api.search import (
    LABEL_CANDIDATE,
    LABEL_ROUND,
    LABEL_SEARCH,
    MAX_LABEL_VALUE,
    SEARCH_KIND,
    SEARCH_PLURAL,
    Candidate,
    CompressionSearch,
    CompressionSearchSpec,
    Measured,
    Plan,
    Round,
    best,
    candidates,
    child_name,
    child_spec,
    next_children,
    pareto,
    promotion,
    space_size,
    why_best,
    within,
)
from kondense.api.spec import API_GROUP, API_VERSION, KIND
from kondense.api.steps import DeviceClass
from kondense.operator import metrics
from kondense.operator.config import OperatorConfig
from kondense.operator.pools import PoolError, select_node_pool
from kondense.operator.reconcile import (
    REFUSED,
    Reconciler,
    api_message,
    patch_status,
    utc_now,
)
from kondense.operator.status import (
    TERMINAL,
    Phase,
    Transition,
    build_conditions,
    status_patch,
)

log = logging.getLogger("kondense.operator")

INVALID_SPEC = "InvalidSpec"
NO_CANDIDATES = "NoCandidates"
CHILD_REJECTED = "ChildRejected"
TIMED_OUT = "TimedOut"
NOT_PROMOTED = "NotPromoted"
NOT_STARTED = "NotStarted"
STOPPED = "SearchTimedOut"


# --- reading ---------------------------------------------------------------------------------


def parse_search_spec(search: Mapping[str, Any]) -> CompressionSearchSpec | str:
    """The search's spec as the typed model, or its problems, one a line, each naming its field
    in the words `kondense validate` uses."""
    document = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": SEARCH_KIND,
        "spec": search.get("spec") or {},
    }
    try:
        return CompressionSearch.model_validate(document).spec
    except ValidationError as error:
        return "\n".join(validation_problems(error))


def search_devices(config: OperatorConfig) -> set[DeviceClass]:
    """The device classes a child (which names no pool) can run on: those the configuration
    maps to a pool. fp16 candidates are left out of a search on a cluster without a gpu pool."""
    return set(config.device_map())


def child_key(child: Mapping[str, Any]) -> tuple[int, Round] | None:
    """(candidate index, round) from a child's labels; None for one that carries no such."""
    labels = (child.get("metadata") or {}).get("labels") or {}
    try:
        return int(labels[LABEL_CANDIDATE]), Round(labels[LABEL_ROUND])
    except (KeyError, ValueError):
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def measure(candidate: int, round_: Round, child: Mapping[str, Any]) -> Measured:
    """What a child's status says, as the pure decisions read it."""
    status = child.get("status") or {}
    phase = status.get("phase")
    results = status.get("results") or {}
    return Measured(
        candidate=candidate,
        round=round_,
        finished=phase in TERMINAL,
        succeeded=phase == SUCCEEDED,
        speedup=_number(results.get("speedup")),
        size_ratio=_number(results.get("sizeRatio")),
        metric_drop=_number(results.get("metricDrop")),
        accepted=phase == SUCCEEDED and bool(results.get("accepted", True)),
        reason=str(status.get("reason") or ""),
    )


def model_artifact(child: Mapping[str, Any]) -> str | None:
    """The URI of the compressed model among a child's artifacts (the first .onnx, else the
    first artifact)."""
    artifacts = (child.get("status") or {}).get("artifacts") or []
    models = [a for a in artifacts if str(a.get("name", "")).endswith(".onnx")] or artifacts
    uri = models[0].get("uri") if models else None
    return str(uri) if uri else None


# --- deciding the status (pure) --------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """Everything one reconcile saw and did, for `compute_search_status`."""

    candidates: list[Candidate]
    children: dict[tuple[int, Round], dict[str, Any]]  # created this time included
    plan: Plan
    space_size: int
    timed_out: bool = False
    stopped: frozenset[tuple[int, Round]] = frozenset()  # deleted unfinished on timeout


def measured_all(observed: Observed) -> list[Measured]:
    out = []
    for (index, round_), child in sorted(observed.children.items()):
        m = measure(index, round_, child)
        if (index, round_) in observed.stopped:
            m = Measured(index, round_, finished=True, reason=STOPPED)
        out.append(m)
    return out


def promoted_set(spec: CompressionSearchSpec, observed: Observed) -> set[int] | None:
    """The candidates promoted to the full round (`promotion`), as a set."""
    keep = promotion(spec, len(observed.candidates), measured_all(observed))
    return None if keep is None else set(keep)


def candidate_done(
    spec: CompressionSearchSpec, observed: Observed, index: int, keep: set[int] | None
) -> bool:
    """A candidate's outcome is known: its full round finished, or its screening finished and
    it was not promoted, or the search is over."""
    by_round = {r: measure(index, r, c) for (i, r), c in observed.children.items() if i == index}
    if (index, Round.full) in observed.stopped or (index, Round.screen) in observed.stopped:
        return True
    full = by_round.get(Round.full)
    if full is not None:
        return full.finished
    screen = by_round.get(Round.screen)
    if screen is not None and screen.finished:
        return observed.plan.done or (keep is not None and index not in keep)
    return observed.plan.done


def candidate_outcome(spec: CompressionSearchSpec, observed: Observed, index: int) -> str:
    """accepted (fully evaluated within the budget), rejected (measured, but over the budget
    or not promoted) or failed (no result): the label of kondense_search_candidates_total."""
    measured = [m for m in measured_all(observed) if m.candidate == index]
    full = next((m for m in measured if m.round is Round.full), None)
    if full is not None and full.succeeded and within(full, spec.objective.max_metric_drop):
        return "accepted"
    if any(m.metric_drop is not None for m in measured):
        return "rejected"
    return "failed"


def candidate_entry(
    spec: CompressionSearchSpec, observed: Observed, candidate: Candidate, keep: set[int] | None
) -> dict[str, Any]:
    """One status.candidates item: the candidate as its latest child reports it."""
    entry: dict[str, Any] = {
        "index": candidate.index,
        "name": candidate.name,
        "recipe": candidate.recipe,
    }
    round_ = next(
        (r for r in (Round.full, Round.screen) if (candidate.index, r) in observed.children), None
    )
    if round_ is None:
        over = observed.plan.done
        entry["phase"] = FAILED if over else PENDING
        entry["reason"] = STOPPED if over and observed.timed_out else NOT_STARTED
        return entry
    child = observed.children[(candidate.index, round_)]
    status = child.get("status") or {}
    runner = status.get("runner") or {}
    results = status.get("results") or {}
    entry["round"] = round_.value
    entry["job"] = child["metadata"]["name"]
    entry["phase"] = status.get("phase") or PENDING
    entry["reason"] = status.get("reason") or "Created"
    if (candidate.index, round_) in observed.stopped:
        entry["phase"], entry["reason"] = FAILED, STOPPED
    elif (
        round_ is Round.screen
        and keep is not None
        and candidate.index not in keep
        and entry["phase"] in TERMINAL
    ):
        entry["reason"] = NOT_PROMOTED
    optional = {
        "pool": runner.get("pool"),
        "node": runner.get("node"),
        "cpu": results.get("cpu"),
        "sizeRatio": _number(results.get("sizeRatio")),
        "speedup": _number(results.get("speedup")),
        "metricDrop": _number(results.get("metricDrop")),
        "accepted": measure(candidate.index, round_, child).accepted
        if status.get("phase") in TERMINAL
        else None,
        "artifact": model_artifact(child),
    }
    entry.update({k: v for k, v in optional.items() if v is not None and v != ""})
    return entry


def cpu_note(children: Sequence[Mapping[str, Any]]) -> str:
    """What to say when the candidates ran on different CPUs: each one is judged by the ratios
    it measured against its own baseline on its own node, so they stay comparable, but raw
    latencies are not. Names the CPUs where the children's results report them, else the
    nodes."""
    cpus: dict[str, str] = {}
    nodes: set[str] = set()
    for child in children:
        status = child.get("status") or {}
        node = (status.get("runner") or {}).get("node")
        if not node:
            continue
        nodes.add(str(node))
        cpu = (status.get("results") or {}).get("cpu")
        if cpu:
            cpus[str(node)] = str(cpu)
    compared = "each candidate is compared by the ratios it measured against its own baseline"
    if len(set(cpus.values())) > 1:
        listed = "; ".join(f"{node}: {cpu}" for node, cpu in sorted(cpus.items()))
        return f"candidates ran on nodes whose CPUs differ ({listed}); {compared} on its node"
    if not cpus and len(nodes) > 1:
        return (
            f"candidates ran on {len(nodes)} nodes ({', '.join(sorted(nodes))}) whose CPUs "
            f"were not reported and may differ; {compared} on its node"
        )
    return ""


def compute_search_status(
    search: Mapping[str, Any], spec: CompressionSearchSpec, observed: Observed, now: str
) -> dict[str, Any]:
    """The whole status of a search from its children: candidates, Pareto front, best, phase,
    conditions."""
    meta = search["metadata"]
    generation = int(meta.get("generation", 1))
    previous = search.get("status") or {}
    names = {c.index: c.name for c in observed.candidates}
    measured = measured_all(observed)
    keep = promoted_set(spec, observed)
    entries = [candidate_entry(spec, observed, c, keep) for c in observed.candidates]
    done = sum(candidate_done(spec, observed, c.index, keep) for c in observed.candidates)
    total = len(observed.candidates)
    finals = [m for m in measured if m.round is Round.full]
    winner = best(finals, spec.objective)
    note = cpu_note(list(observed.children.values()))
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "candidatesTotal": total,
        "candidatesDone": done,
        "spaceSize": observed.space_size,
        "candidates": entries,
        "paretoFront": [names[i] for i in pareto(finals)],
        "startTime": previous.get("startTime") or now,
    }
    why = why_best(winner, finals, spec.objective, names) if winner is not None else ""
    if winner is not None:
        child = observed.children[(winner.candidate, Round.full)]
        chosen = next(c for c in observed.candidates if c.index == winner.candidate)
        status["best"] = {
            k: v
            for k, v in {
                "name": chosen.name,
                "recipe": chosen.recipe,
                "job": child["metadata"]["name"],
                "artifact": model_artifact(child),
                "speedup": winner.speedup,
                "sizeRatio": winner.size_ratio,
                "metricDrop": winner.metric_drop,
                "why": why,
            }.items()
            if v is not None
        }
    won = f"{names[winner.candidate]}: {why}" if winner is not None else None
    phase = _search_phase(spec, observed, names, won, done, total, finals)
    message = phase.message + (f"; {note}" if note else "")
    status.update(
        {
            "phase": phase.phase,
            "reason": phase.reason,
            "message": message,
            "conditions": build_conditions(
                Phase(phase.phase, phase.reason, message),
                generation,
                (previous.get("conditions") or [])
                if previous.get("observedGeneration") == generation
                else [],
                now,
            ),
        }
    )
    if phase.phase in TERMINAL:
        status["completionTime"] = previous.get("completionTime") or now
    return status


def _search_phase(
    spec: CompressionSearchSpec,
    observed: Observed,
    names: dict[int, str],
    won: str | None,
    done: int,
    total: int,
    finals: list[Measured],
) -> Phase:
    """`won`: "<best candidate>: <why it won>", or None while no candidate is accepted."""
    budget = spec.objective.max_metric_drop
    timeout = spec.budget.timeout_seconds
    if observed.plan.done:
        if won is not None:
            if observed.timed_out:
                return Phase(
                    SUCCEEDED,
                    TIMED_OUT,
                    f"budget.timeoutSeconds ({timeout} s) ran out after {done}/{total} "
                    f"candidates; best so far {won}",
                )
            return Phase(SUCCEEDED, "BestFound", f"best {won}; {total} candidates tried")
        measured = [m for m in finals if m.metric_drop is not None]
        closest = min(measured, key=lambda m: m.metric_drop or 0.0, default=None)
        nearest = (
            f"; the smallest drop measured was {closest.metric_drop:.4g}"
            if closest is not None
            else ""
        )
        if observed.timed_out:
            return Phase(
                FAILED,
                TIMED_OUT,
                f"budget.timeoutSeconds ({timeout} s) ran out after {done}/{total} candidates "
                f"with none accepted{nearest}; raise the timeout or narrow spec.space",
            )
        return Phase(
            FAILED,
            "NoCandidateAccepted",
            f"none of the {total} candidates stayed within maxMetricDrop {budget:g} on the "
            f"full evaluation{nearest}; raise spec.objective.maxMetricDrop or widen spec.space",
        )
    running = [
        (index, round_)
        for (index, round_), child in sorted(observed.children.items())
        if (child.get("status") or {}).get("phase") not in TERMINAL
    ]
    if not observed.children:
        return Phase(PENDING, "Starting", f"starting the first of {total} candidates")
    doing = ", ".join(f"{names.get(i, i)} ({r.value})" for i, r in running) or "none"
    evaluating = any(r is Round.full for _, r in running)
    return Phase(
        RUNNING,
        "Evaluating" if evaluating else "Screening",
        f"{done}/{total} candidates done; running: {doing}",
    )


def search_transitions(
    previous: Mapping[str, Any], desired: Mapping[str, Any], observed: Observed | None = None
) -> list[Transition]:
    """The Events a new status brings: CandidateFinished for each child that finished since the
    previous status (status.candidates shows each candidate's latest round: a screening that
    the previous status had already replaced by its full round was announced then),
    SearchSucceeded or SearchFailed when the search ends."""
    before = {
        (e.get("index"), e.get("round")): e.get("phase")
        for e in previous.get("candidates") or []
        if e.get("job")
    }
    names = {c.index: c.name for c in observed.candidates} if observed is not None else {}
    moved: list[Transition] = []
    for m in measured_all(observed) if observed is not None else []:
        if not m.finished or before.get((m.candidate, m.round.value)) in TERMINAL:
            continue
        if m.round is Round.screen and (m.candidate, Round.full.value) in before:
            continue
        assert observed is not None
        child = observed.children[(m.candidate, m.round)]
        status = child.get("status") or {}
        phase = FAILED if m.reason == STOPPED else status.get("phase", FAILED)
        figures = ", ".join(
            f"{label} {value:.4g}"
            for label, value in (("speedup", m.speedup), ("size ratio", m.size_ratio),
                                 ("drop", m.metric_drop))
            if value is not None
        )  # fmt: skip
        moved.append(
            Transition(
                "Normal" if phase == SUCCEEDED else "Warning",
                "CandidateFinished",
                f"{names.get(m.candidate, m.candidate)} ({m.round.value} round, "
                f"{child['metadata']['name']}): {phase}, {m.reason or phase}"
                + (f"; {figures}" if figures else ""),
            )
        )
    if desired.get("phase") in TERMINAL and previous.get("phase") != desired.get("phase"):
        kind, reason = (
            ("Normal", "SearchSucceeded")
            if desired["phase"] == SUCCEEDED
            else ("Warning", "SearchFailed")
        )
        moved.append(Transition(kind, reason, str(desired.get("message", ""))[:1024]))
    return moved


def failed_status(search: Mapping[str, Any], reason: str, message: str, now: str) -> dict[str, Any]:
    """Status of a search the operator will not run (invalid spec, no candidate, a child the
    apiserver refuses)."""
    generation = int(search["metadata"].get("generation", 1))
    previous = search.get("status") or {}
    same = previous.get("observedGeneration") == generation
    return {
        **{k: previous[k] for k in ("candidates", "candidatesTotal", "candidatesDone")
           if k in previous},
        "observedGeneration": generation,
        "phase": FAILED,
        "reason": reason,
        "message": message,
        "conditions": build_conditions(
            Phase(FAILED, reason, message),
            generation,
            (previous.get("conditions") or []) if same else [],
            now,
        ),
        "startTime": previous.get("startTime") or now,
        "completionTime": (previous.get("completionTime") if same else None) or now,
    }  # fmt: skip


def child_manifest(
    search: Mapping[str, Any], spec: CompressionSearchSpec, candidate: Candidate, round_: Round
) -> dict[str, Any]:
    """The CompressionJob of one candidate in one round, owned by the search."""
    meta = search["metadata"]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {
            "name": child_name(meta["name"], candidate, round_),
            "namespace": meta["namespace"],
            "labels": {
                LABEL_SEARCH: meta["name"],
                LABEL_CANDIDATE: str(candidate.index),
                LABEL_ROUND: round_.value,
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{API_GROUP}/{API_VERSION}",
                    "kind": SEARCH_KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": child_spec(spec, candidate, round_).model_dump(
            by_alias=True, exclude_none=True, mode="json"
        ),
    }


def seconds_since(start: str | None, now: str) -> float | None:
    if not start:
        return None
    try:
        parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
        return (parse(now) - parse(start)).total_seconds()
    except ValueError:
        return None


# --- the reconciler --------------------------------------------------------------------------


class SearchReconciler:
    """Reconciles CompressionSearches with the Reconciler's clients, workers and Event poster.
    Created once; registers itself with `jobs.add_kind`."""

    def __init__(self, jobs: Reconciler) -> None:
        self.jobs = jobs
        self.custom = jobs.custom
        self.timeout = jobs.timeout
        self._guard = threading.Lock()
        self._active: set[tuple[str, str]] = set()  # in flight: their timeout is watched
        self._failed: set[tuple[str, str]] = set()
        jobs.add_kind(SEARCH_KIND, self)

    @property
    def config(self) -> OperatorConfig:
        return self.jobs.config

    def revisit(self, everything: bool) -> set[tuple[str, str]]:
        with self._guard:
            return set(self._failed) | (set(self._active) if everything else set())

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._active.discard((namespace, name))
            self._failed.discard((namespace, name))

    def reconcile_named(
        self, namespace: str, name: str, snapshot: dict[str, Any] | None = None
    ) -> None:
        """Reconcile the CompressionSearch `namespace/name` as it is now (gone: nothing to do).
        The queue never hands one search to two workers at once."""
        try:
            search: Any = self.custom.get_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                namespace,
                SEARCH_PLURAL,
                name,
                _request_timeout=self.timeout,
            )
        except ApiException as error:
            if error.status == 404:
                self.forget(namespace, name)
                return
            raise
        if search["metadata"].get("deletionTimestamp"):
            return  # garbage collection removes the children
        key = (namespace, name)
        try:
            self._reconcile(dict(search))
        except Exception as error:
            metrics.RECONCILE_ERRORS.labels(type(error).__name__).inc()
            with self._guard:
                self._failed.add(key)
            raise
        with self._guard:
            self._failed.discard(key)

    def _reconcile(self, search: dict[str, Any]) -> None:
        meta = search["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        generation = int(meta.get("generation", 1))
        current = search.get("status") or {}
        now = utc_now()
        if current.get("observedGeneration") == generation and current.get("phase") in TERMINAL:
            self._settle(namespace, name, terminal=True)
            return  # a generation's terminal status is final
        if len(name) > MAX_LABEL_VALUE:
            message = (
                f"metadata.name: {len(name)} characters; a CompressionSearch's name labels its "
                f"children, and label values stop at {MAX_LABEL_VALUE}: use a shorter name"
            )
            self._write(search, current, failed_status(search, "NameTooLong", message, now), now)
            return
        spec = parse_search_spec(search)
        if isinstance(spec, str):
            self._write(search, current, failed_status(search, INVALID_SPEC, spec, now), now)
            return
        devices = search_devices(self.config)
        try:
            found = candidates(spec, devices)
            space = space_size(spec, devices)
            for candidate in found:
                select_node_pool(child_spec(spec, candidate, Round.full), self.config)
        except PoolError as error:
            self._write(search, current, failed_status(search, error.reason, str(error), now), now)
            return
        except ValueError as error:
            self._write(search, current, failed_status(search, INVALID_SPEC, str(error), now), now)
            return
        if not found:
            message = (
                "spec.space holds no candidate this cluster can run (fp16 needs a gpu pool, "
                f"and the operator maps {', '.join(sorted(d.value for d in devices))}); "
                "add INT8, pruning or distillation candidates"
            )
            self._write(search, current, failed_status(search, NO_CANDIDATES, message, now), now)
            return
        children = self._children(namespace, name, meta["uid"], len(found))
        measured = [measure(i, r, c) for (i, r), c in sorted(children.items())]
        elapsed = seconds_since(current.get("startTime"), now)
        timed_out = elapsed is not None and elapsed > spec.budget.timeout_seconds
        plan = next_children(spec, len(found), measured, timed_out=timed_out)
        for index, round_ in plan.start:
            candidate = found[index]
            created = self._create_child(search, spec, candidate, round_)
            if isinstance(created, str):
                failure = failed_status(search, CHILD_REJECTED, created, now)
                self._write(search, current, failure, now)
                return
            children[(index, round_)] = created
        stopped: set[tuple[int, Round]] = set()
        if timed_out:
            for key, child in children.items():
                if (child.get("status") or {}).get("phase") not in TERMINAL:
                    self._delete_child(child)
                    stopped.add(key)
        observed = Observed(found, children, plan, space, timed_out, frozenset(stopped))
        desired = compute_search_status(search, spec, observed, now)
        self._write(search, current, desired, now, spec=spec, observed=observed)

    def _children(
        self, namespace: str, name: str, uid: str, count: int
    ) -> dict[tuple[int, Round], dict[str, Any]]:
        """This search's children by (candidate, round): labelled with its name and owned by
        its uid (an earlier search of the same name may still be having its children
        collected)."""
        listing: Any = self.custom.list_namespaced_custom_object(
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            label_selector=f"{LABEL_SEARCH}={name}",
            _request_timeout=self.timeout,
            _preload_content=False,
        )
        children: dict[tuple[int, Round], dict[str, Any]] = {}
        for child in json.loads(listing.data)["items"]:
            owners = child["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == uid for o in owners):
                continue
            key = child_key(child)
            if key is not None and key[0] < count:
                children[key] = child
        return children

    def _create_child(
        self,
        search: dict[str, Any],
        spec: CompressionSearchSpec,
        candidate: Candidate,
        round_: Round,
    ) -> dict[str, Any] | str:
        """The child, created (an Event says so) or, on 409, as an earlier reconcile made it;
        or the apiserver's words when it refuses it."""
        manifest = child_manifest(search, spec, candidate, round_)
        meta = manifest["metadata"]
        try:
            created: Any = self.custom.create_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                meta["namespace"],
                PLURAL,
                manifest,
                _request_timeout=self.timeout,
            )
        except ApiException as error:
            if error.status in REFUSED:
                return (
                    f"the apiserver refused the CompressionJob {meta['name']} of candidate "
                    f"{candidate.name}: {api_message(error)}"
                )
            if error.status != 409:
                raise
            # An earlier reconcile (perhaps of an operator since killed) created it; its
            # listing missed it only if it is another search's, whose collection will end.
            return dict(manifest)
        self.jobs.post_event(
            search,
            Transition(
                "Normal",
                "CandidateStarted",
                f"{candidate.name} ({round_.value} round): CompressionJob {meta['name']}, "
                f"recipe {candidate.recipe}",
            ),
            kind=SEARCH_KIND,
        )
        return dict(created)

    def _delete_child(self, child: dict[str, Any]) -> None:
        meta = child["metadata"]
        try:
            self.custom.delete_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                body=client.V1DeleteOptions(propagation_policy="Background"),
                _request_timeout=self.timeout,
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def _write(
        self,
        search: dict[str, Any],
        current: dict[str, Any],
        desired: dict[str, Any],
        now: str,
        spec: CompressionSearchSpec | None = None,
        observed: Observed | None = None,
    ) -> None:
        meta = search["metadata"]
        patch_status(self.custom, SEARCH_PLURAL, meta, status_patch(current, desired), self.timeout)
        for moved in search_transitions(current, desired, observed):
            self.jobs.post_event(search, moved, kind=SEARCH_KIND)
        terminal = desired.get("phase") in TERMINAL
        if terminal and current.get("phase") != desired.get("phase"):
            log.info("%s/%s: %s", meta["namespace"], meta["name"], desired.get("message"))
            outcomes = (
                [candidate_outcome(spec, observed, c.index) for c in observed.candidates]
                if spec is not None and observed is not None
                else []
            )
            seconds = seconds_since(desired.get("startTime"), desired.get("completionTime", now))
            metrics.record_search_finished(desired["phase"], outcomes, seconds)
        self._settle(meta["namespace"], meta["name"], terminal=terminal)

    def _settle(self, namespace: str, name: str, terminal: bool) -> None:
        with self._guard:
            if terminal:
                self._active.discard((namespace, name))
            else:
                self._active.add((namespace, name))
