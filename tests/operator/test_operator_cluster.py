"""The operator against the local cluster: real runner pods run `kondense run` in the runner
image on the real nodes, reading models from the cluster's S3 server (or a PersistentVolume)
and writing their outputs back to it.

One operator process serves the module (tests/operator/conftest.py), under the ClusterRole of
operator/rbac.yaml, watching the `kop-*` namespaces each test gets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.cluster import Cluster, wait_for
from fixtures.models import build_tiny_onnx
from fixtures.operator_cluster import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    compression_job,
    phase_is,
    put_s3_tree,
    s3_object_size,
    wait_cj,
)

pytestmark = pytest.mark.cluster

TINY_INPUTS = [{"name": "x", "shape": [1, 16]}]
QUICK_EVALUATION = {"requireSpeedup": False, "maxMetricDrop": 1.0, "warmup": 2, "runs": 20}
RUN_S = 300  # apply -> a tiny recipe's terminal status, runner pod start included


@pytest.fixture(scope="module")
def tiny_onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-built MLP on this machine: tests upload it, runner pods never see this path."""
    return build_tiny_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture
def tiny_model(cluster: Cluster, bucket: str, tiny_onnx_file: Path) -> str:
    """The hand-built MLP in this test's bucket: its s3:// URI."""
    return cluster.put_s3(tiny_onnx_file, bucket, "models/tiny.onnx")


def recipe(model: str, out: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": {"uri": model, "format": "onnx", "inputs": TINY_INPUTS},
        "steps": list(steps),
        "evaluation": QUICK_EVALUATION,
        "output": {"uri": out},
        **extra,
    }


def apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    from kubernetes import client

    api = client.CustomObjectsApi(cluster.api_client)
    created: dict[str, Any] = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    return created


def runner_jobs(cluster: Cluster, namespace: str) -> list[Any]:
    from kubernetes import client

    return list(client.BatchV1Api(cluster.api_client).list_namespaced_job(namespace).items)


def runner_pods(cluster: Cluster, namespace: str) -> list[Any]:
    from kubernetes import client

    selector = "app.kubernetes.io/managed-by=kondense-operator"
    core = client.CoreV1Api(cluster.api_client)
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body["status"]["conditions"]}


def event_reasons(cluster: Cluster, namespace: str, name: str) -> list[str]:
    from kubernetes import client

    events = client.CoreV1Api(cluster.api_client).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=CompressionJob"
    )
    return [e.reason for e in sorted(events.items, key=lambda e: e.metadata.creation_timestamp)]


def event_reasons_with(
    cluster: Cluster, namespace: str, name: str, reason: str, timeout: float = 30
) -> list[str]:
    """The reasons of the job's Events once one says `reason`: the operator posts an Event
    just after the status it is about, so a test that saw the status may be a moment early."""
    from kubernetes import client

    wait_for(
        client.CoreV1Api(cluster.api_client).list_namespaced_event,
        lambda e: e.involved_object.name == name and e.reason == reason,
        timeout=timeout,
        namespace=namespace,
        field_selector=f"involvedObject.name={name},involvedObject.kind=CompressionJob",
    )
    return event_reasons(cluster, namespace, name)


def test_int8_job_succeeds_on_a_cpu_node_with_results_artifacts_and_columns(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    spec = recipe(tiny_model, f"s3://{bucket}/out-int8", {"quantize": {"mode": "dynamic"}})
    apply(cluster, kop_namespace, compression_job("tiny-int8", **spec))
    waited = cluster.kubectl_run(
        "wait", "-n", kop_namespace, "--for=condition=Ready", f"--timeout={RUN_S - 20}s",
        "compressionjob/tiny-int8", check=False,
    )  # fmt: skip
    body = wait_cj(cluster, kop_namespace, "tiny-int8", phase_is("Succeeded", "Failed"), 10)
    assert waited.returncode == 0, f"{waited.stderr}\n{body.get('status')}\n{operator.log()}"
    status = body["status"]
    assert status["phase"] == "Succeeded"
    assert status["observedGeneration"] == 1
    assert conditions(body)["Ready"]["status"] == "True"
    assert conditions(body)["Stalled"]["status"] == "False"
    assert status["runner"]["node"] in ("cpu-0", "cpu-1")
    assert status["runner"]["pool"] == "cpu"
    # INT8 weights are 4x smaller; on this 5 KB graph quantization parameters eat into that.
    assert status["results"]["sizeRatio"] > 1.2
    artifacts = {a["name"]: a for a in status["artifacts"]}
    assert any(name.endswith(".onnx") for name in artifacts)
    for artifact in artifacts.values():
        assert artifact["uri"].startswith(f"s3://{bucket}/out-int8/")
        assert s3_object_size(cluster, artifact["uri"]) == artifact["bytes"]
    assert status["startTime"] <= status["completionTime"]

    table = cluster.kubectl_run("get", "-n", kop_namespace, "compressionjobs", "tiny-int8")
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == [
        "NAME", "PHASE", "REASON", "RECIPE", "POOL", "SIZE-RATIO", "SPEEDUP", "METRIC-DROP",
        "EVALUATED-ON", "AGE",
    ]  # fmt: skip
    cells = row.split()
    assert cells[1:5] == ["Succeeded", "Succeeded", "int8-dynamic", "cpu"]
    assert float(cells[5]) == pytest.approx(status["results"]["sizeRatio"], rel=0.01)

    reasons = event_reasons_with(cluster, kop_namespace, "tiny-int8", "Succeeded")
    assert reasons[-1] == "Succeeded" and len(reasons) >= 2

    scraped = operator.metrics()
    assert re.search(
        r'kondense_compressionjob_size_ratio\{[^}]*name="tiny-int8"[^}]*\} [0-9.]+', scraped
    )
    assert re.search(r'kondense_compressionjobs\{[^}]*phase="Succeeded"[^}]*\} [1-9]', scraped)


def test_a_compressionjob_applied_with_kubectl_runs_in_the_runner_image_as_a_restricted_pod(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The `inspect` pool says who it is before it execs the real runner: uid 65532, a root
    filesystem it cannot write, seccomp in filter mode; `kubectl logs` shows that and the
    runner's progress lines, and the termination message becomes the status."""
    manifest = tmp_path / "job.yaml"
    spec = recipe(
        tiny_model, f"s3://{bucket}/out-inspect", {"quantize": {"mode": "dynamic"}},
        nodePool="inspect",
    )  # fmt: skip
    manifest.write_text(yaml.safe_dump(compression_job("inspected", **spec)))
    cluster.kubectl_run("apply", "-n", kop_namespace, "-f", str(manifest))
    body = wait_cj(cluster, kop_namespace, "inspected", phase_is("Succeeded", "Failed"), RUN_S)
    status = body["status"]
    assert status["phase"] == "Succeeded", f"{status}\n{operator.log()}"
    (pod,) = runner_pods(cluster, kop_namespace)
    name = pod.metadata.name
    assert pod.spec.containers[0].image == cluster.image("runner-cpu")

    logs = cluster.kubectl_run("logs", "-n", kop_namespace, f"pod/{name}").stdout
    assert "inspect: uid=65532 gid=65532" in logs, logs
    assert "Read-only file system" in logs and "inspect: write to / failed" in logs, logs
    assert re.search(r"^inspect: Seccomp:\s+2$", logs, re.MULTILINE), logs
    for step in ("fetch model", "publish"):
        assert f"kondense: {step}" in logs, logs

    got = cluster.kubectl_run(
        "get", "-n", kop_namespace, f"pod/{name}", "-o",
        "jsonpath={.status.containerStatuses[0].state.terminated.message}",
    )  # fmt: skip
    outcome = json.loads(got.stdout)
    assert outcome["succeeded"] is True
    assert status["reason"] == outcome["reason"] and status["message"] == outcome["message"]
    assert status["artifacts"] == outcome["artifacts"]
    assert status["results"]["sizeRatio"] == outcome["results"]["sizeRatio"]


def test_a_runner_over_its_memory_limit_is_oomkilled_and_the_job_says_what_to_raise(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    """spec.resources.memory is the runner container's limit; the `hungry` pool's runner
    writes 4 GiB before it would start the recipe, the kernel kills it, and the job says so."""
    spec = recipe(
        tiny_model, f"s3://{bucket}/out-oom", {"quantize": {"mode": "dynamic"}},
        nodePool="hungry", resources={"memory": "256Mi"},
    )  # fmt: skip
    apply(cluster, kop_namespace, compression_job("oom", **spec))
    body = wait_cj(cluster, kop_namespace, "oom", phase_is("Succeeded", "Failed"), RUN_S)
    status = body["status"]
    assert status["phase"] == "Failed", status
    assert status["reason"] == "OOMKilled", status
    assert "256Mi" in status["message"] and "spec.resources.memory" in status["message"], status
    assert conditions(body)["Failed"]["reason"] == "OOMKilled"
    pods = runner_pods(cluster, kop_namespace)
    assert len(pods) == 2  # the test configuration's backoffLimit: 1
    for pod in pods:
        (container,) = pod.status.container_statuses
        assert container.state.terminated.reason == "OOMKilled", container.state
        assert container.state.terminated.exit_code == 137
        assert pod.spec.containers[0].resources.limits["memory"] == "256Mi"
    assert "OOMKilled" in event_reasons_with(cluster, kop_namespace, "oom", "OOMKilled")


@pytest.mark.slow
def test_the_smallest_minilm_manifest_succeeds_on_built_in_sentences(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str
) -> None:
    """What a new user applies first: a Hugging Face model, export, dynamic INT8, no data."""
    from fixtures.models import minilm_path

    model = put_s3_tree(cluster, minilm_path(), bucket, "models/all-MiniLM-L6-v2")
    apply(
        cluster,
        kop_namespace,
        compression_job(
            "minilm",
            model={"uri": model, "format": "huggingface", "task": "text-embedding"},
            steps=[{"export": {}}, {"quantize": {"mode": "dynamic"}}],
            output={"uri": f"s3://{bucket}/out-minilm"},
        ),
    )
    body = wait_cj(cluster, kop_namespace, "minilm", phase_is("Succeeded", "Failed"), 900)
    status = body["status"]
    assert status["phase"] == "Succeeded", f"{status.get('message')}\n{operator.log()}"
    results = status["results"]
    assert results["evaluationData"] == "builtin-text"
    assert results["evaluationSamples"] >= 250
    assert results["metricName"] == "cosine" and results["metricDrop"] <= 0.01
    assert "built-in sentences" in status["message"] and "built-in sentences" in results["verdict"]
    for artifact in status["artifacts"]:
        assert s3_object_size(cluster, artifact["uri"]) == artifact["bytes"]


def _pod_nodes_wide(cluster: Cluster, namespace: str) -> dict[str, str]:
    """Pod name -> the NODE column of `kubectl get pods -o wide`."""
    table = cluster.kubectl_run("get", "pods", "-n", namespace, "-o", "wide").stdout
    header, *rows = table.splitlines()
    at = header.index(" NODE ") + 1  # columns are aligned: a cell starts under its header
    return {row.split()[0]: row[at:].split()[0] for row in rows}


def test_fp16_recipes_land_on_gpu_0_and_int8_recipes_on_a_cpu_node(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    """No spec.nodePool: the recipe's device class picks the pool, as status.runner and
    `kubectl get pods -o wide` show."""
    for name, mode in (("tiny-fp16", "fp16"), ("tiny-int8", "dynamic")):
        spec = recipe(tiny_model, f"s3://{bucket}/out-{name}", {"quantize": {"mode": mode}})
        apply(cluster, kop_namespace, compression_job(name, **spec))
    fp16 = wait_cj(cluster, kop_namespace, "tiny-fp16", phase_is("Succeeded", "Failed"), RUN_S)
    int8 = wait_cj(cluster, kop_namespace, "tiny-int8", phase_is("Succeeded", "Failed"), RUN_S)
    for body in (fp16, int8):
        assert body["status"]["phase"] == "Succeeded", body["status"]["message"]
    assert fp16["status"]["runner"]["pool"] == "gpu" and fp16["status"]["runner"]["node"] == "gpu-0"
    assert int8["status"]["runner"]["pool"] == "cpu"
    assert int8["status"]["runner"]["node"] in ("cpu-0", "cpu-1")

    wide = _pod_nodes_wide(cluster, kop_namespace)
    by_job = {p.metadata.annotations["kondense.dev/compressionjob"]: p
              for p in runner_pods(cluster, kop_namespace)}  # fmt: skip
    assert wide[by_job["tiny-fp16"].metadata.name] == "gpu-0", wide
    assert wide[by_job["tiny-int8"].metadata.name] in ("cpu-0", "cpu-1"), wide
    assert by_job["tiny-fp16"].spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in (by_job["tiny-int8"].spec.containers[0].resources.limits or {})


def test_bad_input_fails_with_the_runners_reason_and_is_not_retried(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str
) -> None:
    missing = f"s3://{bucket}/no-such-model.onnx"
    spec = recipe(missing, f"s3://{bucket}/out-bad", {"quantize": {"mode": "dynamic"}})
    apply(cluster, kop_namespace, compression_job("bad-input", **spec))
    body = wait_cj(cluster, kop_namespace, "bad-input", phase_is("Succeeded", "Failed"), RUN_S)
    status = body["status"]
    assert status["phase"] == "Failed"
    assert status["reason"] == "BadInput"
    assert "no-such-model.onnx" in status["message"]
    assert conditions(body)["Stalled"]["status"] == "True"
    assert conditions(body)["Failed"]["reason"] == "BadInput"
    (job,) = runner_jobs(cluster, kop_namespace)
    assert job.status.failed == 1 and any(c.type == "Failed" for c in job.status.conditions)
    assert len(runner_pods(cluster, kop_namespace)) == 1
    assert "BadInput" in event_reasons_with(cluster, kop_namespace, "bad-input", "BadInput")


def test_transient_failure_is_retried_within_the_backoff_limit(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    spec = recipe(tiny_model, f"s3://{bucket}/out-flaky", {"export": {}}, nodePool="flaky")
    apply(cluster, kop_namespace, compression_job("flaky", **spec))
    body = wait_cj(cluster, kop_namespace, "flaky", phase_is("Succeeded", "Failed"), RUN_S)
    assert body["status"]["phase"] == "Succeeded", body["status"]["message"]
    assert body["status"]["runner"]["attempts"] == 2
    pods = runner_pods(cluster, kop_namespace)
    assert sorted(p.status.phase for p in pods) == ["Failed", "Succeeded"]
    (first,) = [p for p in pods if p.status.phase == "Failed"]
    log = cluster.pod_log(kop_namespace, first.metadata.name, "runner")
    assert "flaky: first attempt fails" in log


def test_unschedulable_runner_pod_stalls_the_job_with_the_schedulers_message(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    spec = recipe(tiny_model, f"s3://{bucket}/out-nowhere", {"export": {}}, nodePool="nowhere")
    apply(cluster, kop_namespace, compression_job("nowhere", **spec))
    waited = cluster.kubectl_run(
        "wait", "-n", kop_namespace, "--for=condition=Stalled", "--timeout=120s",
        "compressionjob/nowhere", check=False,
    )  # fmt: skip
    body = wait_cj(cluster, kop_namespace, "nowhere", lambda b: True, 10)
    assert waited.returncode == 0, f"{waited.stderr}\n{body.get('status')}\n{operator.log()}"
    status = body["status"]
    assert status["phase"] == "Pending" and status["reason"] == "Unschedulable"
    assert "didn't match Pod's node affinity/selector" in status["message"], status["message"]
    assert conditions(body)["Reconciling"]["status"] == "False"
    assert "Unschedulable" in event_reasons_with(cluster, kop_namespace, "nowhere", "Unschedulable")
    table = cluster.kubectl_run("get", "-n", kop_namespace, "compressionjobs", "-o", "wide")
    row = table.stdout.splitlines()[1]
    assert row.split()[1:3] == ["Pending", "Unschedulable"] and "node affinity/selector" in row


def test_fp16_on_a_pool_without_a_gpu_fails_without_a_runner_job(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    """The apiserver admits any pool name; the operator knows `slow` provides no GPU."""
    spec = recipe(
        tiny_model, f"s3://{bucket}/out-nogpu", {"quantize": {"mode": "fp16"}}, nodePool="slow"
    )
    apply(cluster, kop_namespace, compression_job("nogpu", **spec))
    body = wait_cj(cluster, kop_namespace, "nogpu", phase_is("Failed"), 60)
    status = body["status"]
    assert status["reason"] == "PoolLacksDevice", status
    assert status["message"].startswith("spec.nodePool: fp16 needs a GPU; pool 'slow' has none;")
    assert status["recipe"] == "fp16" and status["runner"]["attempts"] == 0
    assert conditions(body)["Stalled"]["status"] == "True"
    assert runner_jobs(cluster, kop_namespace) == []
    assert "PoolLacksDevice" in event_reasons_with(
        cluster, kop_namespace, "nogpu", "PoolLacksDevice"
    )


def test_operator_killed_mid_run_resumes_without_duplicate_jobs(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    names = [f"resume-{i}" for i in range(3)]
    for name in names:
        spec = recipe(tiny_model, f"s3://{bucket}/out-{name}", {"export": {}}, nodePool="slow")
        apply(cluster, kop_namespace, compression_job(name, **spec))
    for name in names:
        wait_cj(cluster, kop_namespace, name, phase_is("Running", "Succeeded"), RUN_S)
    operator.kill()
    operator.start()
    for name in names:
        body = wait_cj(cluster, kop_namespace, name, phase_is("Succeeded", "Failed"), RUN_S)
        assert body["status"]["phase"] == "Succeeded", body["status"]["message"]
    assert sorted(j.metadata.name for j in runner_jobs(cluster, kop_namespace)) == [
        f"{name}-g1" for name in names
    ]
    assert len(runner_pods(cluster, kop_namespace)) == 3


def test_deleting_a_running_job_leaves_no_runner_job_or_pod(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    from kubernetes import client

    spec = recipe(tiny_model, f"s3://{bucket}/out-del", {"export": {}}, nodePool="sleepy")
    apply(cluster, kop_namespace, compression_job("doomed", **spec))
    wait_cj(cluster, kop_namespace, "doomed", phase_is("Running"), RUN_S)
    client.CustomObjectsApi(cluster.api_client).delete_namespaced_custom_object(
        GROUP, VERSION, kop_namespace, PLURAL, "doomed"
    )
    batch, core = client.BatchV1Api(cluster.api_client), client.CoreV1Api(cluster.api_client)
    _wait_empty(batch.list_namespaced_job, kop_namespace)
    _wait_empty(core.list_namespaced_pod, kop_namespace)


def _wait_empty(list_fn: Any, namespace: str, timeout: float = 90) -> None:
    """Watch until the namespace holds none of what list_fn lists."""
    from kubernetes import watch

    listing = list_fn(namespace)
    names = {o.metadata.name for o in listing.items}
    if not names:
        return
    for event in watch.Watch().stream(
        list_fn, namespace, resource_version=listing.metadata.resource_version,
        timeout_seconds=int(timeout),
    ):  # fmt: skip
        if event["type"] == "DELETED":
            names.discard(event["object"].metadata.name)
        else:
            names.add(event["object"].metadata.name)
        if not names:
            return
    raise AssertionError(f"still there after {timeout}s: {sorted(names)}")


def test_editing_the_spec_reruns_it_and_observed_generation_follows(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    from kubernetes import client

    spec = recipe(tiny_model, f"s3://{bucket}/out-edit", {"export": {}}, nodePool="sleepy")
    apply(cluster, kop_namespace, compression_job("edited", **spec))
    first = wait_cj(cluster, kop_namespace, "edited", phase_is("Running"), RUN_S)
    assert first["status"]["observedGeneration"] == 1
    client.CustomObjectsApi(cluster.api_client).patch_namespaced_custom_object(
        GROUP, VERSION, kop_namespace, PLURAL, "edited", {"spec": {"timeoutSeconds": 1200}}
    )
    second = wait_cj(
        cluster,
        kop_namespace,
        "edited",
        lambda b: (
            (b.get("status") or {}).get("observedGeneration") == 2
            and b["status"]["phase"] == "Running"
        ),
        RUN_S,
    )
    assert second["metadata"]["generation"] == 2
    assert second["status"]["runner"]["job"] == "edited-g2"
    assert conditions(second)["Reconciling"]["observedGeneration"] == 2
    _wait_gone(cluster, kop_namespace, "edited-g1")
    (job,) = runner_jobs(cluster, kop_namespace)
    # The new spec's timeoutSeconds (1200), plus the grace the runner gets to report it.
    assert job.metadata.name == "edited-g2" and job.spec.active_deadline_seconds == 1200 + 60


def _wait_gone(cluster: Cluster, namespace: str, job_name: str, timeout: float = 90) -> None:
    from kubernetes import client, watch

    batch = client.BatchV1Api(cluster.api_client)
    listing = batch.list_namespaced_job(namespace)
    if job_name not in {j.metadata.name for j in listing.items}:
        return
    for event in watch.Watch().stream(
        batch.list_namespaced_job, namespace,
        resource_version=listing.metadata.resource_version, timeout_seconds=int(timeout),
    ):  # fmt: skip
        if event["type"] == "DELETED" and event["object"].metadata.name == job_name:
            return
    raise AssertionError(f"Job {job_name} of the old generation was not deleted")


def test_runner_job_deleted_by_hand_mid_run_ends_the_generation_without_a_second_job(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    """One runner Job per (uid, generation), ever: the operator does not run a recipe a second
    time behind the user's back; it says what happened and how to run it again."""
    from kubernetes import client

    spec = recipe(tiny_model, f"s3://{bucket}/out-lost", {"export": {}}, nodePool="sleepy")
    apply(cluster, kop_namespace, compression_job("lost-job", **spec))
    wait_cj(cluster, kop_namespace, "lost-job", phase_is("Running"), RUN_S)
    batch = client.BatchV1Api(cluster.api_client)
    batch.delete_namespaced_job("lost-job-g1", kop_namespace, propagation_policy="Background")
    body = wait_cj(cluster, kop_namespace, "lost-job", phase_is("Failed"), 60)
    assert body["status"]["reason"] == "RunnerJobDeleted", body["status"]
    assert "lost-job-g1" in body["status"]["message"] and "spec" in body["status"]["message"]
    _wait_gone(cluster, kop_namespace, "lost-job-g1")
    assert runner_jobs(cluster, kop_namespace) == []
    assert "RunnerJobDeleted" in event_reasons_with(
        cluster, kop_namespace, "lost-job", "RunnerJobDeleted"
    )


def test_pvc_uris_are_mounted_for_the_runner(
    cluster: Cluster, operator: Operator, kop_namespace: str
) -> None:
    """pvc://claim/path: the claim (a PersistentVolume bound to it) is mounted under the
    runner's KONDENSE_PVC_ROOT; the model is read from it and the output written to it."""
    from kubernetes import client

    volume = cluster.make_volume(kop_namespace, "models")
    try:
        build_tiny_onnx(volume / "tiny.onnx")
        spec = {
            "model": {"uri": "pvc://models/tiny.onnx", "format": "onnx", "inputs": TINY_INPUTS},
            "steps": [{"quantize": {"mode": "dynamic"}}],
            "evaluation": QUICK_EVALUATION,
            "output": {"uri": "pvc://models/out"},
        }
        apply(cluster, kop_namespace, compression_job("on-pvc", **spec))
        body = wait_cj(cluster, kop_namespace, "on-pvc", phase_is("Succeeded", "Failed"), RUN_S)
        assert body["status"]["phase"] == "Succeeded", body["status"]["message"]
        written = {a["name"]: a["bytes"] for a in body["status"]["artifacts"]}
        assert written
        for name, size in written.items():
            path = volume / "out" / name
            assert path.stat().st_size == size
            assert path.stat().st_uid == 65532  # written by the runner, as the image's user
    finally:
        client.CoreV1Api(cluster.api_client).delete_namespaced_persistent_volume_claim(
            "models", kop_namespace
        )
        cluster.delete_volumes(kop_namespace)


def reconcile_once(
    cluster: Cluster, operator: Operator, namespace: str, name: str, drop_pool: str = ""
) -> dict[str, Any]:
    """What any event about `name` does (the operator's Reconciler, in this process, with the
    operator's configuration less `drop_pool`); returns the CompressionJob afterwards."""
    import yaml
    from kubernetes import client

    from kondense.operator.config import parse_config
    from kondense.operator.reconcile import Reconciler

    document = yaml.safe_load(operator.config.read_text())
    document["pools"].pop(drop_pool, None)
    config = parse_config(document, str(operator.config), operator.config.parent)
    Reconciler(cluster.api_client, config).reconcile_named(namespace, name)
    api = client.CustomObjectsApi(cluster.api_client)
    body: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return body


def _succeeded(cluster: Cluster, namespace: str, name: str, model: str) -> dict[str, Any]:
    bucket = model.removeprefix("s3://").split("/", 1)[0]
    spec = recipe(
        model, f"s3://{bucket}/out-{name}", {"quantize": {"mode": "dynamic"}}, nodePool="cpu"
    )
    apply(cluster, namespace, compression_job(name, **spec))
    body = wait_cj(cluster, namespace, name, phase_is("Succeeded", "Failed"), RUN_S)
    assert body["status"]["phase"] == "Succeeded", body["status"]["message"]
    assert body["status"]["results"] and body["status"]["artifacts"]
    return body


def test_results_survive_the_deletion_of_a_finished_jobs_runner_pod(
    cluster: Cluster, operator: Operator, kop_namespace: str, tiny_model: str
) -> None:
    """Pod GC, node scale-down or a manual delete: the DELETED event reconciles a finished Job
    whose pod (and so its termination message) is gone. The result is kept."""
    from kubernetes import client

    done = _succeeded(cluster, kop_namespace, "pod-gone", tiny_model)
    core = client.CoreV1Api(cluster.api_client)
    for pod in runner_pods(cluster, kop_namespace):
        core.delete_namespaced_pod(pod.metadata.name, kop_namespace, grace_period_seconds=0)
    _wait_empty(core.list_namespaced_pod, kop_namespace)
    after = reconcile_once(cluster, operator, kop_namespace, "pod-gone")
    assert after["status"] == done["status"]


def test_a_pool_removed_from_the_config_leaves_a_finished_job_as_it_was(
    cluster: Cluster, operator: Operator, kop_namespace: str, tiny_model: str
) -> None:
    from kubernetes import client

    done = _succeeded(cluster, kop_namespace, "pool-gone", tiny_model)
    client.BatchV1Api(cluster.api_client).delete_namespaced_job(
        "pool-gone-g1", kop_namespace, propagation_policy="Background"
    )
    _wait_gone(cluster, kop_namespace, "pool-gone-g1")
    after = reconcile_once(cluster, operator, kop_namespace, "pool-gone", drop_pool="cpu")
    assert after["status"] == done["status"]


def test_a_runner_job_created_before_its_pool_left_the_config_is_adopted(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    """An operator killed between creating the runner Job and writing the first status, then
    restarted without the job's pool: the job has no status, but its Job runs, so it is
    reported as running on the pool its Job names, not failed with UnknownNodePool. (In a
    namespace the operator does not watch; the Job is suspended so that no pod starts.)"""
    from kubernetes import client

    from kondense.operator.config import parse_config
    from kondense.operator.jobs import build_runner_job
    from kondense.operator.reconcile import parse_spec

    spec = recipe("s3://nowhere/tiny.onnx", "s3://nowhere/out", {"export": {}}, nodePool="cpu")
    cj = apply(cluster, namespace, compression_job("orphaned", **spec))
    document = yaml.safe_load(operator.config.read_text())
    config = parse_config(document, str(operator.config), operator.config.parent)
    parsed = parse_spec(cj)
    assert not isinstance(parsed, str), parsed
    manifest = build_runner_job(
        cj["metadata"], parsed, "cpu", config.pools["cpu"], config.backoff_limit, created=0.0
    )
    manifest["spec"]["suspend"] = True
    client.BatchV1Api(cluster.api_client).create_namespaced_job(namespace, manifest)
    after = reconcile_once(cluster, operator, namespace, "orphaned", drop_pool="cpu")
    status = after["status"]
    assert status["phase"] not in ("Failed", "Succeeded"), status
    assert status["runner"]["job"] == "orphaned-g1"
    assert status["runner"]["pool"] == "cpu"


def _wait_cj_gone(cluster: Cluster, namespace: str, name: str, timeout: float = 60) -> None:
    import time

    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom = client.CustomObjectsApi(cluster.api_client)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(0.2)  # polling a deletion that has no condition to wait on
    raise AssertionError(f"{namespace}/{name} still there after {timeout}s")


def test_a_job_left_by_an_earlier_compressionjob_of_the_same_name_is_not_adopted(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    """Deleted and recreated under the same name while the old runner Job lingers (here: the
    old one orphaned it): creating `<name>-g1` answers 409, and that Job is not this one's."""
    from kubernetes import client

    custom = client.CustomObjectsApi(cluster.api_client)
    out = f"s3://{bucket}/out-reborn"
    sleepy = recipe(tiny_model, out, {"export": {}}, nodePool="sleepy")
    old = apply(cluster, kop_namespace, compression_job("reborn", **sleepy))
    wait_cj(cluster, kop_namespace, "reborn", phase_is("Running"), RUN_S)
    custom.delete_namespaced_custom_object(
        GROUP, VERSION, kop_namespace, PLURAL, "reborn", propagation_policy="Orphan"
    )
    wait_for(
        client.BatchV1Api(cluster.api_client).list_namespaced_job,
        lambda job: not job.metadata.owner_references,
        namespace=kop_namespace,
    )
    _wait_cj_gone(cluster, kop_namespace, "reborn")  # the orphan finalizer lets it go
    quick = recipe(tiny_model, out, {"export": {}}, nodePool="cpu")
    new = apply(cluster, kop_namespace, compression_job("reborn", **quick))
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    body = wait_cj(cluster, kop_namespace, "reborn", phase_is("Succeeded", "Failed"), RUN_S)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    (job,) = runner_jobs(cluster, kop_namespace)
    assert job.metadata.labels["kondense.dev/compressionjob-uid"] == new["metadata"]["uid"]


def test_a_runner_job_the_apiserver_refuses_fails_the_job_with_its_words(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    """Here a ResourceQuota allows no Jobs (403 'exceeded quota'): retrying cannot help, so
    the job ends Failed/JobRejected instead of being retried forever without a status."""
    from kubernetes import client

    client.CoreV1Api(cluster.api_client).create_namespaced_resource_quota(
        kop_namespace,
        {"metadata": {"name": "no-jobs"}, "spec": {"hard": {"count/jobs.batch": "0"}}},
    )
    wait_for(
        client.CoreV1Api(cluster.api_client).list_namespaced_resource_quota,
        lambda quota: quota.status and quota.status.hard,
        namespace=kop_namespace,
    )
    spec = recipe(tiny_model, f"s3://{bucket}/out-quota", {"export": {}}, nodePool="cpu")
    apply(cluster, kop_namespace, compression_job("over-quota", **spec))
    body = wait_cj(cluster, kop_namespace, "over-quota", phase_is("Failed"), 60)
    status = body["status"]
    assert status["reason"] == "JobRejected", status
    assert "exceeded quota" in status["message"] and "count/jobs.batch" in status["message"]
    assert conditions(body)["Stalled"]["status"] == "True"
    assert runner_jobs(cluster, kop_namespace) == []
    assert "JobRejected" in event_reasons_with(cluster, kop_namespace, "over-quota", "JobRejected")


def test_a_job_kondense_did_not_create_in_the_way_stalls_the_job_with_its_name(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str, tiny_model: str
) -> None:
    from kubernetes import client

    batch = client.BatchV1Api(cluster.api_client)
    batch.create_namespaced_job(
        kop_namespace,
        {
            "metadata": {"name": "squatted-g1"},
            "spec": {
                "suspend": True,  # never runs: it only holds the name
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": cluster.image("pause")}],
                    }
                },
            },
        },
    )
    spec = recipe(tiny_model, f"s3://{bucket}/out-squat", {"export": {}}, nodePool="cpu")
    apply(cluster, kop_namespace, compression_job("squatted", **spec))
    body = wait_cj(cluster, kop_namespace, "squatted", lambda b: conditions_true(b, "Stalled"), 60)
    assert body["status"]["reason"] == "JobNameTaken", body["status"]
    assert "squatted-g1" in body["status"]["message"]
    batch.delete_namespaced_job("squatted-g1", kop_namespace, propagation_policy="Background")
    done = wait_cj(cluster, kop_namespace, "squatted", phase_is("Succeeded", "Failed"), RUN_S)
    assert done["status"]["phase"] == "Succeeded", done["status"]


def conditions_true(body: dict[str, Any], kind: str) -> bool:
    return any(
        c["type"] == kind and c["status"] == "True"
        for c in (body.get("status") or {}).get("conditions") or []
    )
