"""CompressionSearch on the local cluster (issue #15): the operator fans candidates out as
CompressionJobs on the real nodes, screens them on a few samples, evaluates the promoted ones
fully and keeps the best; a killed operator loses and duplicates no candidate; deleting the
search deletes its children.

The operator is the tests' own (tests/fixtures/operator_cluster.py), under operator/rbac.yaml's
ClusterRole; models and data reach the runner pods from the cluster's S3 server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fixtures.cluster import Cluster, wait_for
from fixtures.operator_cluster import (
    GROUP,
    PLURAL,
    SEARCH_PLURAL,
    VERSION,
    Operator,
    put_s3_tree,
    wait_cj,
)

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SENTENCES = REPO / "examples" / "data" / "sentences.jsonl"
LABEL_SEARCH = "kondense.dev/search"
# Cheap rounds: a few samples to screen, a short benchmark.
QUICK = {"warmup": 2, "runs": 20, "requireSpeedup": False}
SEARCH_S = 900  # apply -> terminal for the small searches below, runner pod starts included


def search(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CompressionSearch",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    from kubernetes import client

    client.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, SEARCH_PLURAL, body
    )


def wait_search(
    cluster: Cluster,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = SEARCH_S,
) -> dict[str, Any]:
    """Watch the search until `predicate(body)` holds; TimeoutError with its status."""
    return wait_cj(cluster, namespace, name, predicate, timeout, plural=SEARCH_PLURAL)


def a_child_started(body: dict[str, Any]) -> bool:
    return any(c.get("job") for c in (body.get("status") or {}).get("candidates") or [])


def finished(body: dict[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def children(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    from kubernetes import client

    listing = client.CustomObjectsApi(cluster.api_client).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, label_selector=f"{LABEL_SEARCH}={name}"
    )
    return list(listing["items"])


def event_reasons(cluster: Cluster, namespace: str, name: str, until: str = "") -> list[str]:
    """The search's Event reasons, once one says `until`: the operator posts Events just after
    the status they are about, so a test that saw the status may be a moment early."""
    from kubernetes import client

    core = client.CoreV1Api(cluster.api_client)
    selector = f"involvedObject.name={name},involvedObject.kind=CompressionSearch"
    if until:
        wait_for(
            core.list_namespaced_event,
            lambda e: e.reason == until,
            timeout=30,
            namespace=namespace,
            field_selector=selector,
        )
    events = core.list_namespaced_event(namespace, field_selector=selector)
    return [e.reason for e in events.items]


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def assert_best_is_fastest_accepted(status: dict[str, Any], max_drop: float) -> None:
    """status.best is the accepted full-round candidate with the highest speedup."""
    full = [
        c
        for c in status["candidates"]
        if c.get("round") == "full" and c["phase"] == "Succeeded" and c["metricDrop"] <= max_drop
    ]
    assert full, status["candidates"]
    fastest = max(full, key=lambda c: c["speedup"])
    assert status["best"]["name"] == fastest["name"], (status["best"], full)
    assert status["best"]["job"] == fastest["job"] and status["best"]["artifact"]
    assert status["best"]["why"].startswith("fastest accepted:")


def assert_one_child_per_candidate_and_round(
    cluster: Cluster, namespace: str, name: str, status: dict[str, Any], killed: bool = False
) -> list[dict[str, Any]]:
    """Every candidate reported, each (candidate, round) run by exactly one child. An operator
    `killed` may have lost the Event of a child it had just created."""
    found = children(cluster, namespace, name)
    keys = [
        (c["metadata"]["labels"]["kondense.dev/candidate"],
         c["metadata"]["labels"]["kondense.dev/round"])
        for c in found
    ]  # fmt: skip
    assert len(keys) == len(set(keys)), keys
    total = status["candidatesTotal"]
    assert status["candidatesDone"] == total and len(status["candidates"]) == total
    assert sorted(c["index"] for c in status["candidates"]) == list(range(total))
    screened = {k for k, r in keys if r == "screen"}
    assert screened == {str(i) for i in range(total)}, keys
    for entry in status["candidates"]:
        assert entry["phase"] in ("Succeeded", "Failed"), entry
        child = next(c for c in found if c["metadata"]["name"] == entry["job"])
        assert child["status"]["phase"] == entry["phase"]
    started = event_reasons(cluster, namespace, name).count("CandidateStarted")
    assert started == len(found) or (killed and started < len(found)), (started, keys)
    return found


class ChildWatch:
    """Every CompressionJob created in a namespace while it runs: the uids each name had (a
    child deleted and created again would have two)."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.uids: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, args=(cluster, namespace), daemon=True)

    def __enter__(self) -> ChildWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _follow(self, cluster: Cluster, namespace: str) -> None:
        from kubernetes import client, watch

        api = client.CustomObjectsApi(cluster.api_client)
        version = ""
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(
                    api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                    resource_version=version, timeout_seconds=5,
                ):  # fmt: skip
                    meta = event["object"]["metadata"]
                    self.uids.setdefault(meta["name"], set()).add(meta["uid"])
                    version = meta["resourceVersion"]
                    if self._stop.is_set():
                        return
            except Exception:  # an expired resourceVersion: from the start again
                version = ""


@pytest.mark.slow
def test_a_minilm_search_runs_candidates_side_by_side_on_both_cpu_nodes_and_keeps_the_fastest(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str
) -> None:
    from fixtures.models import minilm_path

    model = put_s3_tree(cluster, minilm_path(), bucket, "models/all-MiniLM-L6-v2")
    calibration = cluster.put_s3(SENTENCES, bucket, "data/sentences.jsonl")
    started = time.monotonic()
    apply(
        cluster,
        kop_namespace,
        search(
            "minilm",
            model={"uri": model, "format": "huggingface", "task": "text-embedding"},
            data={"calibration": {"uri": calibration, "samples": 16}},
            evaluation={**QUICK, "samples": 48},
            objective={"minimize": "latency", "maxMetricDrop": 0.02},
            space={
                "quantize": {
                    "modes": ["dynamic", "static"],
                    "calibrationMethods": ["minmax", "entropy"],
                    "perChannel": [True, False],
                }
            },
            budget={"maxCandidates": 6, "parallelism": 2, "timeoutSeconds": 1800},
            screening={"samples": 16, "keep": 0.25},  # 2 of 6 go on
            # More than half a 2-CPU node: two candidates at once must go to two nodes.
            resources={"cpu": "1100m"},
            output={"uri": f"s3://{bucket}/search"},
        ),
    )
    body = wait_search(cluster, kop_namespace, "minilm", finished, 1800)
    took = time.monotonic() - started
    status = body["status"]
    assert status["phase"] == "Succeeded", f"{status['message']}\n{operator.log()}"
    print(f"MiniLM search of {status['candidatesTotal']} candidates: {took:.0f} s")
    assert status["candidatesTotal"] == 6 and status["spaceSize"] == 6
    found = assert_one_child_per_candidate_and_round(cluster, kop_namespace, "minilm", status)
    assert_best_is_fastest_accepted(status, 0.02)
    # Some two children ran at the same time, on cpu-0 and on cpu-1.
    spans = [
        (when(c["status"]["startTime"]), when(c["status"]["completionTime"]),
         c["status"]["runner"]["node"])
        for c in found
    ]  # fmt: skip
    side_by_side = {
        frozenset((n1, n2))
        for i, (s1, e1, n1) in enumerate(spans)
        for s2, e2, n2 in spans[i + 1 :]
        if s1 < e2 and s2 < e1 and n1 != n2
    }
    assert frozenset(("cpu-0", "cpu-1")) in side_by_side, spans
    assert {n for _, _, n in spans} == {"cpu-0", "cpu-1"}
    assert status["paretoFront"] and status["best"]["name"] in status["paretoFront"]
    reasons = event_reasons(cluster, kop_namespace, "minilm", until="SearchSucceeded")
    assert reasons.count("CandidateFinished") == len(found), reasons


def digits_search(model: str, calibration: str, evaluation: str, out: str) -> dict[str, Any]:
    return {
        "model": {
            "uri": model,
            "format": "torchscript",
            "task": "image-classification",
            "inputs": [{"name": "pixel_values", "shape": [1, 1, 8, 8], "dtype": "float32"}],
        },
        "data": {
            "calibration": {"uri": calibration, "samples": 64},
            "evaluation": {"uri": evaluation, "samples": 200},
        },
        "evaluation": {**QUICK, "metric": "accuracy", "batchSize": 32},
        "objective": {"minimize": "latency", "maxMetricDrop": 0.05},
        "space": {
            "quantize": {
                "modes": ["dynamic", "static"],
                "calibrationMethods": ["minmax", "percentile"],
                "perChannel": [True],
            }
        },
        "budget": {"maxCandidates": 4, "parallelism": 2, "timeoutSeconds": 900},
        "screening": {"samples": 16, "keep": 0.5},
        "output": {"uri": out},
    }


@pytest.fixture
def digits_uris(
    cluster: Cluster,
    bucket: str,
    digits_cnn_torchscript: Path,
    digits_npz: Path,
    digits_train_npz: Path,
) -> tuple[str, str, str]:
    """The trained digits CNN (TorchScript), its training and held-out images, in S3."""
    return (
        cluster.put_s3(digits_cnn_torchscript, bucket, "models/digits-cnn.ts"),
        cluster.put_s3(digits_train_npz, bucket, "data/digits-train.npz"),
        cluster.put_s3(digits_npz, bucket, "data/digits-eval.npz"),
    )


def test_a_cnn_search_screens_then_evaluates_and_keeps_the_fastest_accepted(
    cluster: Cluster,
    operator: Operator,
    kop_namespace: str,
    bucket: str,
    digits_uris: tuple[str, str, str],
) -> None:
    spec = digits_search(*digits_uris, out=f"s3://{bucket}/search")
    apply(cluster, kop_namespace, search("digits", **spec))
    body = wait_search(cluster, kop_namespace, "digits", finished)
    status = body["status"]
    assert status["phase"] == "Succeeded", f"{status['message']}\n{operator.log()}"
    assert status["candidatesTotal"] == 3  # dynamic, static minmax, static percentile
    assert_one_child_per_candidate_and_round(cluster, kop_namespace, "digits", status)
    assert_best_is_fastest_accepted(status, 0.05)
    rounds = [c["round"] for c in status["candidates"]]
    # keep 0.5 of 3 rounded up, of those screened within twice the budget
    assert 1 <= rounds.count("full") <= 2, status["candidates"]


def test_an_operator_killed_mid_search_loses_and_duplicates_no_candidate(
    cluster: Cluster,
    operator: Operator,
    kop_namespace: str,
    bucket: str,
    digits_uris: tuple[str, str, str],
) -> None:
    spec = digits_search(*digits_uris, out=f"s3://{bucket}/search")
    with ChildWatch(cluster, kop_namespace) as watched:
        apply(cluster, kop_namespace, search("killed", **spec))
        wait_search(
            cluster,
            kop_namespace,
            "killed",
            a_child_started,
        )
        operator.kill()  # the children go on without an operator
        operator.start()
        body = wait_search(cluster, kop_namespace, "killed", finished)
    status = body["status"]
    assert status["phase"] == "Succeeded", f"{status['message']}\n{operator.log()}"
    found = assert_one_child_per_candidate_and_round(
        cluster, kop_namespace, "killed", status, killed=True
    )
    assert {n: len(u) for n, u in watched.uids.items()} == {c["metadata"]["name"]: 1 for c in found}


def test_deleting_a_search_deletes_its_children(
    cluster: Cluster,
    operator: Operator,
    kop_namespace: str,
    bucket: str,
    digits_uris: tuple[str, str, str],
) -> None:
    spec = digits_search(*digits_uris, out=f"s3://{bucket}/search")
    apply(cluster, kop_namespace, search("doomed", **spec))
    wait_search(
        cluster,
        kop_namespace,
        "doomed",
        a_child_started,
    )
    names = [c["metadata"]["name"] for c in children(cluster, kop_namespace, "doomed")]
    assert names
    cluster.kubectl_run("delete", "compressionsearch", "doomed", "-n", kop_namespace)
    cluster.kubectl_run(
        "wait", "--for=delete", *(f"compressionjob/{n}" for n in names),
        "-n", kop_namespace, "--timeout=120s",
    )  # fmt: skip
    assert children(cluster, kop_namespace, "doomed") == []
