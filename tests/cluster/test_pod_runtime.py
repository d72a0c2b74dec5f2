"""What a pod sees when the node agent runs it: env, volumes, init containers, the API."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from fixtures.cluster import pod_finished, wait_for
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
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    write = "open('/work/from-init','w').write('init'); open('/data/from-init','w').write('pvc')"
    mounts = [
        {"name": "work", "mountPath": "/work"},
        {"name": "models", "mountPath": "/data"},
    ]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "inspect"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kondense.dev/pool": "cpu"},
            "volumes": [
                {"name": "work", "emptyDir": {}},
                {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
                {"name": "recipe", "configMap": {"name": "recipe"}},
                {"name": "creds", "secret": {"secretName": "creds"}},
            ],
            "initContainers": [
                {
                    "name": "fetch",
                    "image": "x",
                    "command": ["python", "-c", write],
                    "volumeMounts": mounts,
                }
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "x",
                    "command": ["python", "-c", INSPECT],
                    "workingDir": "/work",
                    "env": [
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {
                            "name": "MODE",
                            "valueFrom": {"configMapKeyRef": {"name": "recipe", "key": "mode"}},
                        },
                        {
                            "name": "PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                        },
                        {
                            "name": "CPU",
                            "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}},
                        },
                    ],
                    "resources": {"limits": {"cpu": "2"}},
                    "volumeMounts": [
                        *mounts,
                        {"name": "recipe", "mountPath": "/etc/recipe", "readOnly": True},
                        {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
                    ],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    done = wait_for(
        core.list_namespaced_pod,
        pod_finished,
        timeout=90,
        namespace=namespace,
    )
    main = done.status.container_statuses[0].state.terminated
    assert done.status.phase == "Succeeded", (main, cluster.pod_log(namespace, "inspect", "main"))
    assert done.status.init_container_statuses[0].state.terminated.exit_code == 0
    seen = json.loads(main.message)
    assert seen["env"] == {
        "POD_NAME": "inspect",
        "NODE": done.spec.node_name,
        "MODE": "int8",
        "PASSWORD": "s3cr3t",
        "CPU": "2",
    }
    assert seen["cwd"] == "/work"
    assert (seen["config"], seen["secret"]) == ("int8", "s3cr3t")
    assert (seen["init"], seen["claim"]) == ("init", "pvc")
    assert seen["server"].startswith("v1.34.")


def test_failing_container_reports_exit_code_and_log_fallback(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "fails"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "x",
                    "command": ["python", "-c", "import sys; print('boom'); sys.exit(3)"],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    done = wait_for(
        core.list_namespaced_pod,
        pod_finished,
        timeout=60,
        namespace=namespace,
    )
    assert done.status.phase == "Failed"
    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert terminated.message.strip() == "boom"


def ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(
        next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16
    )
    return bool(mask & (1 << (15 - 1)))


def test_deleted_pod_ignoring_sigterm_is_killed_after_grace_period(cluster, namespace):
    core = client.CoreV1Api(cluster.api_client)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stubborn"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": "x", "command": ["python", "-c", stubborn]}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    running = wait_for(
        core.list_namespaced_pod, lambda p: p.status.phase == "Running", namespace=namespace
    )
    pid = int(running.status.container_statuses[0].container_id.removeprefix("local://"))
    deadline = time.monotonic() + 20  # until Python has set SIG_IGN (a process has no watch)
    while not ignores_sigterm(pid):
        assert time.monotonic() < deadline, "the process never ignored SIGTERM"
        time.sleep(0.05)

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
    assert 2 <= elapsed < 15, elapsed
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_on_failure_pod_restarts_until_success(cluster, namespace, tmp_path):
    core = client.CoreV1Api(cluster.api_client)
    # Fails on the first run, succeeds on the second: a counter on a hostPath volume.
    flaky = (
        "import pathlib, sys; f = pathlib.Path('/state/runs'); "
        "n = int(f.read_text()) + 1 if f.exists() else 1; f.write_text(str(n)); sys.exit(n < 2)"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "flaky"},
        "spec": {
            "restartPolicy": "OnFailure",
            "volumes": [{"name": "state", "hostPath": {"path": str(tmp_path)}}],
            "containers": [
                {
                    "name": "main",
                    "image": "x",
                    "command": ["python", "-c", flaky],
                    "volumeMounts": [{"name": "state", "mountPath": "/state"}],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    done = wait_for(
        core.list_namespaced_pod,
        pod_finished,
        timeout=60,
        namespace=namespace,
    )
    status = done.status.container_statuses[0]
    assert done.status.phase == "Succeeded"
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 1
