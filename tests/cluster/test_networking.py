"""Cluster networking between real nodes: pod to pod across nodes, Services through kube-proxy,
DNS names from CoreDNS, and the apiserver through the `kubernetes` Service."""

from __future__ import annotations

import json

import pytest
from fixtures.cluster import pod_finished, wait_for
from fixtures.pods import is_ready, named, pod, python
from kubernetes import client

pytestmark = pytest.mark.cluster

# Answers every GET with the name of the pod it runs in (its hostname).
SERVER = """
import http.server, socket
class Name(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), Name).serve_forever()
"""

# Each check is retried for a while: a new Service's rules reach this node's kube-proxy a
# moment after the Service and its endpoints exist. Results go to the termination message.
CLIENT = """
import json, os, socket, ssl, time, urllib.request
ns = os.environ["NAMESPACE"]
sa = "/var/run/secrets/kubernetes.io/serviceaccount"

def get(url):
    with urllib.request.urlopen(url, timeout=3) as r:
        return r.read().decode()

def whoami():
    review = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    req = urllib.request.Request(
        "https://kubernetes.default.svc/apis/authentication.k8s.io/v1/selfsubjectreviews",
        data=review.encode(),
        headers={"Authorization": "Bearer " + open(sa + "/token").read(),
                 "Content-Type": "application/json"},
    )
    ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
    with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
        return json.load(r)["status"]["userInfo"]["username"]

def s3_status():
    with urllib.request.urlopen(os.environ["S3"] + "/", timeout=3) as r:
        return r.status

checks = {
    "pod": lambda: get("http://%s:8080/" % os.environ["SERVER_IP"]),
    "cluster_ip": lambda: get("http://%s/" % os.environ["SERVICE_IP"]),
    "dns_fqdn_address": lambda: socket.gethostbyname("web.%s.svc.cluster.local" % ns),
    "dns_fqdn": lambda: get("http://web.%s.svc.cluster.local/" % ns),
    "dns_short": lambda: get("http://web/"),
    "apiserver": whoami,
    "s3": s3_status,
}
seen = {}
for name, check in checks.items():
    deadline = time.monotonic() + 30
    while True:
        try:
            seen[name] = check()
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                seen[name] = "failed: %r" % exc
                break
            time.sleep(0.5)
print(json.dumps(seen))
open("/dev/termination-log", "w").write(json.dumps(seen))
"""


def on_node(node: str) -> dict[str, str]:
    return {"kubernetes.io/hostname": node}


def test_pod_reaches_pod_on_another_node_services_by_ip_and_name_and_the_apiserver(
    cluster, namespace
):
    core = client.CoreV1Api(cluster.api_client)
    image = cluster.image("operator")
    server = python(
        image,
        SERVER,
        ports=[{"name": "http", "containerPort": 8080}],
        readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    )
    web = pod("web", [server], restartPolicy="Always", nodeSelector=on_node("cpu-1"))
    web["metadata"]["labels"] = {"app": "web"}
    core.create_namespaced_pod(namespace, web)
    service = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    # Ready: the kubelet's probe reached the pod over its network.
    web = wait_for(
        core.list_namespaced_pod, named("web", is_ready), timeout=90, namespace=namespace
    )

    env = [
        {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SERVER_IP", "value": web.status.pod_ip},
        {"name": "SERVICE_IP", "value": service.spec.cluster_ip},
        {"name": "S3", "value": cluster.s3_in_cluster},
    ]
    core.create_namespaced_pod(
        namespace, pod("client", [python(image, CLIENT, env=env)], nodeSelector=on_node("cpu-0"))
    )
    done = wait_for(
        core.list_namespaced_pod, named("client", pod_finished), timeout=120, namespace=namespace
    )
    assert done.status.phase == "Succeeded", cluster.pod_log(namespace, "client", "main")
    seen = json.loads(done.status.container_statuses[0].state.terminated.message)

    assert (done.spec.node_name, web.spec.node_name) == ("cpu-0", "cpu-1")
    assert web.status.pod_ip.startswith("10.244."), web.status.pod_ip
    assert seen["pod"] == "web", seen
    assert seen["cluster_ip"] == "web", seen
    assert service.spec.cluster_ip.startswith("10.96."), service.spec.cluster_ip
    assert seen["dns_fqdn_address"] == service.spec.cluster_ip, seen
    assert seen["dns_fqdn"] == "web", seen
    assert seen["dns_short"] == "web", seen
    assert seen["apiserver"] == f"system:serviceaccount:{namespace}:default", seen
    assert seen["s3"] == 200, seen
