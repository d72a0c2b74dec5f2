"""What a pod sees on a real node: env, volumes (a PersistentVolume among them), init
containers, the in-cluster API; exit codes, logs, grace periods and restarts."""

from __future__ import annotations

import json
import time

import pytest
from fixtures.cluster import pod_finished, wait_for
from fixtures.pods import is_ready, named, pod, python
from kubernetes import client, watch

pytestmark = pytest.mark.cluster

INSPECT = """
import json, os, pathlib
from kubernetes import client, config
config.load_incluster_config()
seen = {
    "env": {k: os.environ[k] for k in ("POD_NAME", "NODE", "MODE", "PASSWORD", "CPU")},
    "cwd": os.getcwd(),
    "config": pathlib.Path("/etc/recipe/mode").read_text(),
    "secret": pathlib.Path("/etc/creds/password").read_text(),
    "init": pathlib.Path("/work/from-init").read_text(),
    "claim": pathlib.Path("/data/from-init").read_text(),
    "server": client.VersionApi().get_code().git_version,
}
pathlib.Path("/data/from-main").write_text("main")
pathlib.Path("/dev/termination-log").write_text(json.dumps(seen))
"""


def test_pod_gets_env_volumes_init_output_and_in_cluster_api(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "recipe"}, "data": {"mode": "int8"}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"password": "s3cr3t"}}
    )
    volume = cluster.make_volume(namespace, "models")
    (volume / "on-host").write_text("host")  # what the PV holds is what the pod reads
    write = (
        "import pathlib; pathlib.Path('/work/from-init').write_text('init'); "
        "pathlib.Path('/data/from-init').write_text(pathlib.Path('/data/on-host').read_text())"
    )
    mounts = [
        {"name": "work", "mountPath": "/work"},
        {"name": "models", "mountPath": "/data"},
    ]
    image = cluster.image("operator")
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "recipe", "key": "mode"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {
            "name": "CPU",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}},
        },
    ]
    main = python(
        image,
        INSPECT,
        workingDir="/work",
        env=env,
        resources={"limits": {"cpu": "250m", "memory": "256Mi"}},
        volumeMounts=[
            *mounts,
            {"name": "recipe", "mountPath": "/etc/recipe", "readOnly": True},
            {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
        ],
    )
    manifest = pod(
        "inspect",
        [main],
        nodeSelector={"kondense.dev/pool": "cpu"},
        initContainers=[python(image, write, name="fetch", volumeMounts=mounts)],
        volumes=[
            {"name": "work", "emptyDir": {}},
            {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
            {"name": "recipe", "configMap": {"name": "recipe"}},
            {"name": "creds", "secret": {"secretName": "creds"}},
        ],
    )
    core.create_namespaced_pod(namespace, manifest)
    done = wait_for(
        core.list_namespaced_pod, named("inspect", pod_finished), timeout=90, namespace=namespace
    )
    terminated = done.status.container_statuses[0].state.terminated
    assert done.status.phase == "Succeeded", (
        terminated,
        cluster.pod_log(namespace, "inspect", "main"),
    )
    assert done.status.init_container_statuses[0].state.terminated.exit_code == 0
    seen = json.loads(terminated.message)
    assert seen["env"] == {
        "POD_NAME": "inspect",
        "NODE": done.spec.node_name,
        "MODE": "int8",
        "PASSWORD": "s3cr3t",
        "CPU": "250",
    }
    assert done.spec.node_name in ("cpu-0", "cpu-1")
    assert seen["cwd"] == "/work"
    assert (seen["config"], seen["secret"]) == ("int8", "s3cr3t")
    assert (seen["init"], seen["claim"]) == ("init", "host")
    assert seen["server"].startswith("v1.34.")
    # The claim is the host directory: what the containers wrote is there.
    assert (volume / "from-init").read_text() == "host"
    assert (volume / "from-main").read_text() == "main"


def test_failing_container_reports_exit_code_log_and_log_fallback(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    fails = python(
        cluster.image("operator"),
        "import sys; print('boom'); sys.exit(3)",
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    core.create_namespaced_pod(namespace, pod("fails", [fails]))
    done = wait_for(
        core.list_namespaced_pod, named("fails", pod_finished), timeout=60, namespace=namespace
    )
    assert done.status.phase == "Failed"
    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert terminated.message.strip() == "boom"
    assert terminated.container_id.startswith("containerd://")
    assert cluster.kubectl_run("logs", "-n", namespace, "fails").stdout == "boom\n"


# Ignores SIGTERM, then says so through its readiness probe (a file), so the test knows when.
STUBBORN = """
import pathlib, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path("/tmp/ignoring").touch()
time.sleep(600)
"""


def test_deleted_pod_ignoring_sigterm_is_killed_after_grace_period(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    ready = {"exec": {"command": ["cat", "/tmp/ignoring"]}, "periodSeconds": 1}
    stubborn = python(cluster.image("operator"), STUBBORN, readinessProbe=ready)
    core.create_namespaced_pod(
        namespace, pod("stubborn", [stubborn], terminationGracePeriodSeconds=2)
    )
    running = wait_for(
        core.list_namespaced_pod, named("stubborn", is_ready), timeout=90, namespace=namespace
    )

    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace)
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_pod,
        namespace=namespace,
        resource_version=running.metadata.resource_version,
        timeout_seconds=30,
    ):
        if event["type"] == "DELETED":
            w.stop()
    elapsed = time.monotonic() - started
    # The kubelet waits out the grace period, SIGKILLs, then lets the pod object go.
    assert 2 <= elapsed < 15, elapsed


def test_on_failure_pod_restarts_until_success(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    # Fails on the first run, succeeds on the second: a counter on an emptyDir, which outlives
    # the container (not the pod).
    flaky = (
        "import pathlib, sys; f = pathlib.Path('/state/runs'); "
        "n = int(f.read_text()) + 1 if f.exists() else 1; f.write_text(str(n)); "
        "print('run', n); sys.exit(n < 2)"
    )
    main = python(
        cluster.image("operator"),
        flaky,
        volumeMounts=[{"name": "state", "mountPath": "/state"}],
    )
    manifest = pod(
        "flaky", [main], restartPolicy="OnFailure", volumes=[{"name": "state", "emptyDir": {}}]
    )
    core.create_namespaced_pod(namespace, manifest)
    done = wait_for(
        core.list_namespaced_pod, named("flaky", pod_finished), timeout=90, namespace=namespace
    )
    status = done.status.container_statuses[0]
    assert done.status.phase == "Succeeded"
    assert status.restart_count == 1
    assert cluster.pod_log(namespace, "flaky", "main") == "run 2\n"  # the counter survived
