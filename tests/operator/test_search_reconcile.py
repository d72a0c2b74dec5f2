"""The CompressionSearch reconcile (operator/search.py) against an in-memory apiserver: children
within parallelism, screening then the full round for the promoted ones, nothing started twice
by a reconcile repeated after a restart, the best and its reason, the note on differing CPUs,
the timeout, and the status's Events."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kondense.api.search import LABEL_SEARCH, SEARCH_KIND, CompressionSearchSpec, Round
from kondense.operator.config import OperatorConfig, PoolConfig
from kondense.operator.reconcile import Reconciler
from kondense.operator.search import (
    SearchReconciler,
    child_manifest,
    cpu_note,
)

SPEC: dict[str, Any] = {
    "model": {
        "uri": "s3://b/m.onnx",
        "format": "onnx",
        "inputs": [{"name": "x", "shape": [1, 16]}],
    },
    "space": {"quantize": {"modes": ["dynamic"], "perChannel": [True, False]}},
    "budget": {"parallelism": 2, "maxCandidates": 6, "timeoutSeconds": 600},
    "screening": {"samples": 16, "keep": 0.5},
    "output": {"uri": "s3://b/out"},
}


class FakeApi:
    """The CustomObjectsApi calls the search reconcile makes, on dicts; creates and deletes
    are recorded."""

    def __init__(self, search: dict[str, Any]) -> None:
        self.search = search
        self.jobs: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []
        self.deleted: list[str] = []

    def get_namespaced_custom_object(self, group, version, ns, plural, name, **_):  # type: ignore[no-untyped-def]
        assert plural == "compressionsearches" and name == self.search["metadata"]["name"]
        return copy.deepcopy(self.search)

    def list_namespaced_custom_object(self, group, version, ns, plural, label_selector, **_):  # type: ignore[no-untyped-def]
        assert plural == "compressionjobs"
        key, value = label_selector.split("=")
        items = [j for j in self.jobs.values() if j["metadata"]["labels"].get(key) == value]
        return SimpleNamespace(data=json.dumps({"items": items}).encode())

    def create_namespaced_custom_object(self, group, version, ns, plural, body, **_):  # type: ignore[no-untyped-def]
        name = body["metadata"]["name"]
        if name in self.jobs:
            raise ApiException(status=409, reason="AlreadyExists")
        self.jobs[name] = copy.deepcopy(body)
        self.created.append(name)
        return copy.deepcopy(body)

    def delete_namespaced_custom_object(self, group, version, ns, plural, name, **_):  # type: ignore[no-untyped-def]
        self.jobs.pop(name)
        self.deleted.append(name)

    def patch_namespaced_custom_object_status(self, group, version, ns, plural, name, body, **_):  # type: ignore[no-untyped-def]
        status = self.search.setdefault("status", {})
        for key, value in body["status"].items():
            if value is None:
                status.pop(key, None)
            elif isinstance(value, dict) and isinstance(status.get(key), dict):
                status[key] = {**status[key], **value}
            else:
                status[key] = value

    def finish(self, name: str, node: str, speedup: float, drop: float, **results: Any) -> None:
        self.jobs[name]["status"] = {
            "phase": "Succeeded",
            "reason": "Succeeded",
            "runner": {"pool": "cpu", "node": node},
            "results": {"speedup": speedup, "sizeRatio": 3.9, "metricDrop": drop, **results},
            "artifacts": [{"name": "model.onnx", "uri": f"s3://b/out/{name}/model.onnx"}],
        }


def search_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": SEARCH_KIND,
        "metadata": {"name": "s", "namespace": "ns", "uid": "uid-s", "generation": 1},
        "spec": {**SPEC, **spec},
    }


def reconciler(
    api: FakeApi, working_dir: str | None = "/w"
) -> tuple[SearchReconciler, list[tuple[str, str]]]:
    config = OperatorConfig(pools={"cpu": PoolConfig(image="runner", workingDir=working_dir)})
    jobs = Reconciler(client.ApiClient(), config)
    events: list[tuple[str, str]] = []
    jobs.post_event = lambda obj, moved, kind="": events.append((moved.reason, moved.message))  # type: ignore[method-assign]
    searches = SearchReconciler(jobs)
    searches.custom = api  # type: ignore[assignment]
    return searches, events


def test_children_start_within_parallelism_and_a_repeated_reconcile_starts_none_twice() -> None:
    api = FakeApi(search_body())
    searches, events = reconciler(api)
    searches.reconcile_named("ns", "s")
    assert api.created == ["s-00-screen", "s-01-screen"]
    # An operator restarted before the status was written finds the children and makes none.
    api.search.pop("status")
    searches.reconcile_named("ns", "s")
    assert api.created == ["s-00-screen", "s-01-screen"]
    assert [r for r, _ in events].count("CandidateStarted") == 2
    status = api.search["status"]
    assert status["phase"] == "Running" and status["reason"] == "Screening"
    assert status["candidatesTotal"] == 2 and status["candidatesDone"] == 0
    assert [c["job"] for c in status["candidates"]] == ["s-00-screen", "s-01-screen"]


def test_the_promoted_candidate_is_evaluated_fully_and_becomes_the_best_with_its_reason() -> None:
    api = FakeApi(search_body())
    searches, events = reconciler(api)
    searches.reconcile_named("ns", "s")
    api.finish("s-00-screen", "cpu-0", speedup=1.8, drop=0.002)
    api.finish("s-01-screen", "cpu-1", speedup=2.3, drop=0.004)
    searches.reconcile_named("ns", "s")
    searches.reconcile_named("ns", "s")  # nothing new: nothing announced again
    assert [r for r, _ in events].count("CandidateFinished") == 2
    assert api.created[-1] == "s-01-full"  # keep 0.5 of 2: the faster one
    status = api.search["status"]
    assert status["phase"] == "Running" and status["reason"] == "Evaluating"
    first = status["candidates"][0]
    assert first["reason"] == "NotPromoted" and status["candidatesDone"] == 1
    api.finish("s-01-full", "cpu-1", speedup=2.1, drop=0.004)
    searches.reconcile_named("ns", "s")
    status = api.search["status"]
    assert status["phase"] == "Succeeded", status["message"]
    assert status["best"]["name"] == "int8-dynamic-pt"
    assert status["best"]["job"] == "s-01-full"
    assert status["best"]["artifact"] == "s3://b/out/s-01-full/model.onnx"
    assert status["best"]["why"] == "fastest accepted: 2.10x speedup, drop 0.004 ≤ 0.01"
    assert status["paretoFront"] == ["int8-dynamic-pt"]
    assert status["candidatesDone"] == 2 and status["completionTime"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    # Both nodes reported no CPU model: the message says the nodes differ.
    assert "2 nodes (cpu-0, cpu-1)" in status["message"]
    reasons = [r for r, _ in events]
    assert reasons.count("CandidateFinished") == 3 and reasons[-1] == "SearchSucceeded"
    # The terminal status is final: another reconcile writes and posts nothing.
    before = copy.deepcopy(api.search["status"])
    searches.reconcile_named("ns", "s")
    assert api.search["status"] == before and len(events) == len(reasons)


def test_none_within_the_budget_fails_the_search_with_the_smallest_drop() -> None:
    api = FakeApi(search_body(screening={"samples": 0}))
    searches, events = reconciler(api)
    searches.reconcile_named("ns", "s")
    assert api.created == ["s-00-full", "s-01-full"]
    api.finish("s-00-full", "cpu-0", speedup=2.0, drop=0.05)
    api.jobs["s-00-full"]["status"]["phase"] = "Failed"
    api.jobs["s-01-full"]["status"] = {"phase": "Failed", "reason": "BadInput", "message": "x"}
    searches.reconcile_named("ns", "s")
    status = api.search["status"]
    assert status["phase"] == "Failed" and status["reason"] == "NoCandidateAccepted"
    assert "smallest drop measured was 0.05" in status["message"]
    assert "best" not in status and events[-1][0] == "SearchFailed"


def test_a_timed_out_search_deletes_unfinished_children_and_keeps_the_best_so_far() -> None:
    api = FakeApi(search_body(screening={"samples": 0}, budget={"parallelism": 1}))
    searches, _ = reconciler(api)
    searches.reconcile_named("ns", "s")
    api.finish("s-00-full", "cpu-0", speedup=1.5, drop=0.001)
    searches.reconcile_named("ns", "s")
    assert api.created == ["s-00-full", "s-01-full"]
    api.search["status"]["startTime"] = "2020-01-01T00:00:00Z"
    searches.reconcile_named("ns", "s")
    assert api.deleted == ["s-01-full"]
    status = api.search["status"]
    assert status["phase"] == "Succeeded" and status["reason"] == "TimedOut"
    assert status["best"]["name"] == "int8-dynamic"
    assert status["candidates"][1]["reason"] == "SearchTimedOut"


def test_an_invalid_spec_fails_the_search_naming_the_field() -> None:
    api = FakeApi(search_body(budget={"parallelism": 0}))
    searches, events = reconciler(api)
    searches.reconcile_named("ns", "s")
    status = api.search["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec"
    assert "spec.budget.parallelism" in status["message"] and not api.created
    assert events[-1][0] == "SearchFailed"


def test_a_local_model_on_a_cluster_pool_fails_the_search_before_any_child() -> None:
    model = {**SPEC["model"], "uri": "models/m.onnx"}
    api = FakeApi(search_body(model=model))
    searches, _ = reconciler(api, working_dir=None)
    searches.reconcile_named("ns", "s")
    status = api.search["status"]
    assert status["phase"] == "Failed" and status["reason"] == "LocalUriInCluster"
    assert "spec.model.uri" in status["message"] and not api.created


def test_children_are_owned_by_the_search_and_labelled_with_it() -> None:
    from kondense.api.search import candidates
    from kondense.api.spec import CompressionJobSpec
    from kondense.api.steps import DeviceClass

    body = search_body()
    spec = CompressionSearchSpec.model_validate(body["spec"])
    candidate = candidates(spec, {DeviceClass.cpu})[1]
    child = child_manifest(body, spec, candidate, Round.screen)
    assert child["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kondense.dev/v1alpha1",
            "kind": SEARCH_KIND,
            "name": "s",
            "uid": "uid-s",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert child["metadata"]["labels"][LABEL_SEARCH] == "s"
    parsed = CompressionJobSpec.model_validate(child["spec"])
    assert parsed.evaluation.samples == 16 and parsed.steps[0].quantize is not None
    assert parsed.steps[0].quantize.per_channel is False


@pytest.mark.parametrize(
    ("cpus", "said"),
    [
        ({"cpu-0": "Xeon 8375C vnni", "cpu-1": "EPYC 7R13 avx2"}, "CPUs differ (cpu-0: Xeon"),
        ({"cpu-0": "Xeon 8375C vnni", "cpu-1": "Xeon 8375C vnni"}, ""),
        ({"cpu-0": None, "cpu-1": None}, "2 nodes (cpu-0, cpu-1) whose CPUs were not reported"),
        ({"cpu-0": None}, ""),
    ],
)
def test_the_message_says_when_candidates_ran_on_different_cpus(
    cpus: dict[str, str | None], said: str
) -> None:
    children = [
        {"status": {"runner": {"node": node}, "results": {"cpu": cpu} if cpu else {}}}
        for node, cpu in cpus.items()
    ]
    note = cpu_note(children)
    assert (said in note) if said else note == ""


def test_a_budget_raised_mid_run_takes_effect_at_the_next_reconcile() -> None:
    """spec.budget is the one part of a search's spec the CRD lets change after creation."""
    api = FakeApi(search_body(budget={"parallelism": 1, "maxCandidates": 6, "timeoutSeconds": 60}))
    searches, _ = reconciler(api)
    searches.reconcile_named("ns", "s")
    assert api.created == ["s-00-screen"]
    api.search["spec"]["budget"]["parallelism"] = 2
    api.search["metadata"]["generation"] = 2
    searches.reconcile_named("ns", "s")
    assert api.created == ["s-00-screen", "s-01-screen"]
    assert api.search["status"]["observedGeneration"] == 2
