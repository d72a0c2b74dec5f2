"""What a pod sees when the node agent runs it: env, volumes, init containers, the API."""

from __future__ import annotations

import json

import pytest
from fixtures.cluster import wait_for
from kubernetes import client

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
        lambda p: p.status.phase in ("Succeeded", "Failed"),
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
        lambda p: p.status.phase in ("Succeeded", "Failed"),
        timeout=60,
        namespace=namespace,
    )
    assert done.status.phase == "Failed"
    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert terminated.message.strip() == "boom"
