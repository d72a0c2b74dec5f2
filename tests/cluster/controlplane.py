"""Start, stop and inspect the local Kubernetes cluster used by tests and demos.

    python tests/cluster/controlplane.py up       # build if needed, start or reuse, wait healthy
    python tests/cluster/controlplane.py down     # stop everything, remove .cluster/
    python tests/cluster/controlplane.py status   # one line per component; exit 1 if unhealthy

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy are the
official binaries built by build.sh; CoreDNS and the image registry are built from their Go
modules too. The control plane runs in a network namespace of its own and each node in
another (netns.py); each node is a kubelet with its own containerd (nodes.py). The host
reaches the apiserver and the registry through forward.py on 127.0.0.1 ports recorded in
.cluster/state.json. The admin kubeconfig is .cluster/kubeconfig and kubectl is linked at
.cluster/bin/kubectl. Standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import netns  # noqa: E402
import nodes as node_setup  # noqa: E402


def _images_module() -> ModuleType:
    """images/build.py, loaded by path: a module named `build` would be ambiguous (PyPI's
    `build`, the ignored build/ folder)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kondense_images", REPO / "images" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


images = _images_module()

STATE_DIR = REPO / ".cluster"
STATE_FILE = STATE_DIR / "state.json"
KUBECONFIG = STATE_DIR / "kubeconfig"
SERVICE_CIDR = "10.96.0.0/16"
# The S3 API server tests keep models and artifacts in (moto's), as a cluster's MinIO would.
S3_PORT = 9000
S3_IN_CLUSTER = f"http://s3.kube-system.svc.cluster.local:{S3_PORT}"
APISERVER = f"{netns.GATEWAY}:6443"
ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROL_PLANE = [
    "etcd",
    "kube-apiserver",
    "forward",
    "kube-controller-manager",
    "kube-scheduler",
    "registry",
    "coredns",
    "s3",
]
NODE_PROCESSES = ["containerd", "kubelet", "kube-proxy"]
DEBIAN_PACKAGES = ["containerd", "runc", "containernetworking-plugins", "iptables", "conntrack"]
START_TIMEOUT_S = 300


def phase(name: str, started: float) -> None:
    print(f"  {name:34} {time.monotonic() - started:6.1f}s", flush=True)


def run_script(*argv: str) -> str:
    """Run a build script (a no-op when its cache is warm); return its last stdout line."""
    out = subprocess.run(list(argv), stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        sys.exit(out.returncode)
    return out.stdout.strip().splitlines()[-1]


def build_binaries() -> dict[str, Path]:
    k8s = Path(run_script(str(HERE / "build.sh")))
    return {
        "bin": k8s,
        "coredns": Path(run_script(str(HERE / "coredns" / "build.sh"))),
        "registry": Path(run_script(str(HERE / "registry" / "build.sh"))),
        "crictl": Path(run_script(str(HERE / "crictl" / "build.sh"))),
    }


def process_marker(name: str) -> str:
    """What identifies a component's process on its command line."""
    base = name.split("/")[-1]
    return {"forward": "forward.py", "s3": "moto.server"}.get(base, base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def sign(pki: Path, name: str, subject: str, ext: str) -> None:
    """A key and a certificate signed by the cluster's CA."""
    (pki / f"{name}.ext").write_text(ext)
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
        "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.csr"),
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", str(pki / f"{name}.csr"), "-days", "3650",
        "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"), "-CAcreateserial",
        "-extfile", str(pki / f"{name}.ext"), "-out", str(pki / f"{name}.crt"),
    )  # fmt: skip


def client_cert(pki: Path, name: str, user: str, group: str) -> None:
    ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    sign(pki, name, f"/O={group}/CN={user}", ext + "extendedKeyUsage=clientAuth\n")


def make_pki(pki: Path, node_names: list[str]) -> None:
    """A private CA, the apiserver's serving certificate, the service-account signing key,
    and client certificates for each kubelet, kube-proxy and the apiserver's kubelet client."""
    pki.mkdir(parents=True)
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
        "-subj", "/CN=kondense-local-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    names += ["kubernetes.default.svc.cluster.local", "localhost"]
    ips = ["127.0.0.1", netns.GATEWAY, "10.96.0.1"]
    san = ",".join([f"IP:{i}" for i in ips] + [f"DNS:{n}" for n in names])
    sign(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={san}\n",
    )
    openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    for node in node_names:
        client_cert(pki, f"kubelet-{node}", f"system:node:{node}", "system:nodes")
    client_cert(pki, "kube-proxy", "system:kube-proxy", "system:node-proxier")
    client_cert(pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")


def write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str]) -> None:
    """user: {"token": ...} or {"client-certificate": path, "client-key": path}."""
    # JSON is valid YAML, so kubectl and the Python client both read it.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kondense-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [
            {"name": "kondense-local", "context": {"cluster": "kondense-local", "user": "user"}}
        ],
        "current-context": "kondense-local",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


def load_state() -> dict | None:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int, name: str) -> bool:
    """True when pid runs and its command line names `name` (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return name in cmdline and stat.split(")")[-1].split()[0] != "Z"


def http_ok(url: str, state: dict, verify: bool = True, inside: str | None = None) -> bool:
    """GET url (from inside a network namespace when `inside` names one); True on 200."""
    if verify:
        ctx = ssl.create_default_context(cafile=str(STATE_DIR / "pki" / "ca.crt"))
    else:  # controller-manager and scheduler serve health on a self-signed certificate
        ctx = ssl._create_unverified_context()
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {state['token']}"})
    where = netns.entered(inside) if inside else contextlib.nullcontext()
    try:
        with where, urllib.request.urlopen(req, timeout=3, context=ctx) as r:
            return bool(r.status == 200)
    except (OSError, ValueError):
        return False


def component_health(state: dict) -> dict[str, bool]:
    cp = netns.cp_namespace(state["slot"])
    fwd = state["ports"]
    checks = {
        "etcd": lambda: http_ok("http://127.0.0.1:2379/health", state, inside=cp),
        "kube-apiserver": lambda: http_ok(f"{state['server']}/readyz", state),
        "forward": lambda: True,
        "kube-controller-manager": lambda: http_ok(
            "https://127.0.0.1:10257/healthz", state, verify=False, inside=cp
        ),
        "kube-scheduler": lambda: http_ok(
            "https://127.0.0.1:10259/healthz", state, verify=False, inside=cp
        ),
        "registry": lambda: http_ok(f"http://127.0.0.1:{fwd['registry']}/v2/", state),
        "coredns": lambda: http_ok("http://127.0.0.1:8181/ready", state, inside=cp),
        "s3": lambda: http_ok(f"http://127.0.0.1:{fwd['s3']}/moto-api/", state),
    }
    for node in state["nodes"]:
        inside = netns.node_namespace(state["slot"], node)
        checks[f"{node}/containerd"] = lambda: True
        checks[f"{node}/kubelet"] = lambda inside=inside: http_ok(
            "http://127.0.0.1:10248/healthz", state, inside=inside
        )
        checks[f"{node}/kube-proxy"] = lambda inside=inside: http_ok(
            "http://127.0.0.1:10256/healthz", state, inside=inside
        )
    health = {}
    for name, check in checks.items():
        pid = state["pids"].get(name)
        health[name] = bool(pid) and pid_alive(pid, process_marker(name)) and check()
    return health


def healthy(state: dict | None) -> bool:
    return state is not None and all(component_health(state).values())


# The processes this run started: while `up` waits, a child that exits is seen through poll().
STARTED: dict[str, subprocess.Popen] = {}


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    log_file = STATE_DIR / "logs" / f"{name.replace('/', '-')}.log"
    with open(log_file, "ab") as log:
        STARTED[name] = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this script; stopped by `down` through its pid
            env=env,
            cwd=STATE_DIR,
        )
    return STARTED[name].pid


def cri_ready(tools: dict[str, Path], node: node_setup.Node) -> bool:
    """Whether the node's containerd answers CRI calls: it refuses them ("server is not
    initialized yet") until its CRI plugin has recovered its state."""
    endpoint = f"--runtime-endpoint=unix://{node.socket}"
    version = [str(tools["crictl"]), endpoint, "--timeout=2s", "version"]
    return subprocess.run(version, capture_output=True).returncode == 0


def wait_for(what: str, ok, deadline: float, state: dict) -> None:
    while time.monotonic() < deadline:
        if ok():
            return
        for name, proc in STARTED.items():
            if proc.poll() is not None:
                log = STATE_DIR / "logs" / f"{name.replace('/', '-')}.log"
                tail = log.read_text()[-3000:]
                stop(state)
                sys.exit(f"error: {name} exited while waiting for {what}:\n{tail}")
        time.sleep(0.2)
    stop(state)
    sys.exit(f"error: timed out waiting for {what}; logs in {STATE_DIR / 'logs'}")


def kubectl(state: dict, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [state["bin"] + "/kubectl", "--kubeconfig", str(KUBECONFIG), *args],
        capture_output=True,
        text=True,
        input=stdin,
    )


def kubectl_json(state: dict, *args: str) -> dict | None:
    out = kubectl(state, *args, "-o", "json")
    return json.loads(out.stdout) if out.returncode == 0 else None


def nodes_ready(state: dict) -> bool:
    nodes = kubectl_json(state, "get", "nodes")
    if not nodes:
        return False
    ready = {
        n["metadata"]["name"]
        for n in nodes["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n.get("status", {}).get("conditions", [])
        )
        and not any(t["key"].startswith("node.kubernetes.io/") for t in n["spec"].get("taints", []))
    }
    return set(state["nodes"]) <= ready


LOCK: list[int] = []


def repo_lock() -> None:
    """Serialise up/down of this checkout's cluster (two test sessions starting at once)."""
    if not LOCK:
        LOCK.append(os.open(REPO, os.O_RDONLY))
        fcntl.flock(LOCK[0], fcntl.LOCK_EX)


def healthy_within(state: dict | None, seconds: float) -> bool:
    """Health, re-checked for a while: a busy machine must not get its cluster replaced."""
    deadline = time.monotonic() + seconds
    while not healthy(state):
        if state is None or time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def ensure_packages() -> None:
    out = subprocess.run([str(REPO / "scripts" / "debian-packages.sh"), *DEBIAN_PACKAGES])
    if out.returncode != 0:
        sys.exit(out.returncode)


def control_plane_commands(state: dict, tools: dict[str, Path]) -> dict[str, list[str]]:
    """The control plane's processes, each run in the control plane's network namespace."""
    bin_dir, pki = tools["bin"], STATE_DIR / "pki"
    enter = netns.nsenter(netns.cp_namespace(state["slot"]))
    internal = str(STATE_DIR / "kubeconfig-internal")
    return {
        "etcd": [
            *enter,
            f"{bin_dir}/etcd",
            "--name=default",
            f"--data-dir={STATE_DIR / 'etcd'}",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=default=http://127.0.0.1:2380",
            "--unsafe-no-fsync",  # test data only; saves seconds on slow disks
            "--log-level=warn",
        ],
        "kube-apiserver": [
            *enter,
            f"{bin_dir}/kube-apiserver",
            "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=0.0.0.0",
            f"--advertise-address={netns.GATEWAY}",
            "--secure-port=6443",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--authorization-mode=Node,RBAC",
            # Not among the default admission plugins: a kubelet may change only its own Node.
            "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # PodSecurity, not this flag, is what refuses privileged pods in restricted namespaces.
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ],
        "forward": [
            sys.executable,
            str(HERE / "forward.py"),
            netns.cp_namespace(state["slot"]),
            f"{state['ports']['apiserver']}={APISERVER}",
            f"{state['ports']['registry']}={node_setup.REGISTRY}",
            f"{state['ports']['s3']}={netns.GATEWAY}:{S3_PORT}",
        ],
        "kube-controller-manager": [
            *enter,
            f"{bin_dir}/kube-controller-manager",
            f"--kubeconfig={internal}",
            "--bind-address=127.0.0.1",
            f"--cert-dir={pki / 'kcm'}",
            "--leader-elect=false",
            "--controllers=*",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            "--v=1",
        ],
        "kube-scheduler": [
            *enter,
            f"{bin_dir}/kube-scheduler",
            f"--kubeconfig={internal}",
            "--bind-address=127.0.0.1",
            f"--cert-dir={pki / 'scheduler'}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ],
        "registry": [*enter, str(tools["registry"]), "serve", str(STATE_DIR / "registry.yml")],
        "coredns": [*enter, str(tools["coredns"]), "-conf", str(STATE_DIR / "Corefile")],
        "s3": [*enter, venv_python(), "-m", "moto.server", "-H", netns.GATEWAY, "-p", str(S3_PORT)],
    }


def venv_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def registry_config() -> str:
    """The image registry: its blobs live in the cache, so a second cluster pushes nothing."""
    cache = Path(os.environ.get("KONDENSE_CACHE", Path.home() / ".cache" / "kondense"))
    return (
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {cache / 'registry-data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {node_setup.REGISTRY}\n"
    )


def corefile() -> str:
    internal = STATE_DIR / "kubeconfig-internal"
    return (
        f".:53 {{\n    bind {netns.GATEWAY}\n    errors\n    health 127.0.0.1:8080\n"
        "    ready 127.0.0.1:8181\n"
        f"    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n"
        f"        kubeconfig {internal} kondense-local\n"
        "        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }\n"
        "    cache 30\n    loadbalance\n}\n"
    )


def outside_service(
    state: dict, name: str, ports: dict[str, tuple[int, str]], ip: str = ""
) -> None:
    """A Service in kube-system for a server that runs in the control plane's namespace
    rather than as a pod: its EndpointSlice names that address, as for any server outside the
    pod network. ports: {port name: (port, protocol)}."""
    port_list = [{"name": n, "port": p, "protocol": proto} for n, (p, proto) in ports.items()]
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "kube-system"},
                "spec": {"ports": port_list, **({"clusterIP": ip} if ip else {})},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-outside",
                    "namespace": "kube-system",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [netns.GATEWAY]}],
                "ports": port_list,
            },
        ],
    }
    out = kubectl(state, "apply", "-f", "-", stdin=json.dumps(manifest))
    if out.returncode != 0:
        sys.exit(f"error: creating the {name} Service: {out.stderr}")


def advertise_node_extras(state: dict, node: node_setup.Node) -> None:
    """Extended resources through a node-status patch (the documented way without a device
    plugin) and the node's annotations."""
    if node.extended:
        patch = [
            {"op": "add", "path": f"/status/capacity/{k.replace('/', '~1')}", "value": v}
            for k, v in node.extended.items()
        ]
        out = kubectl(
            state, "patch", "node", node.name, "--subresource=status", "--type=json",
            "-p", json.dumps(patch),
        )  # fmt: skip
        if out.returncode != 0:
            sys.exit(f"error: advertising {node.extended} on {node.name}: {out.stderr}")
    if node.annotations:
        pairs = [f"{k}={v}" for k, v in node.annotations.items()]
        kubectl(state, "annotate", "--overwrite", "node", node.name, *pairs)


def prepull(state: dict, node_list: list[node_setup.Node]) -> None:
    """Pull the project's images onto every node now (as `kind load` does), through the CRI
    so the kubelet's image store and garbage collection know them: one short pod per node
    and image, named after the image's tag. A node that has an image starts its pod at once."""
    pods = []
    for node in node_list:
        for name, ref in sorted(state["images"].items()):
            if name == "pause":
                continue  # every pod's sandbox: pulled by the first pod
            tag = ref.rsplit(":", 1)[1].lower().replace(".", "-")
            pods.append(f"pull-{node.name}-{name}-{tag}")
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pods[-1], "namespace": "kube-system"},
                "spec": {
                    "nodeName": node.name,
                    "restartPolicy": "Never",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": "pull",
                            "image": ref,
                            # Resolved through the CRI every time: cheap when the layers are
                            # there, and it restores the repository digest kubelet reports.
                            "imagePullPolicy": "Always",
                            "command": ["python3", "-c", "pass"],
                        }
                    ],
                },
            }
            kubectl(state, "apply", "-f", "-", stdin=json.dumps(pod))
    done = kubectl(
        state, "wait", "-n", "kube-system", "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=1200s", *(f"pod/{p}" for p in pods),
    )  # fmt: skip
    kubectl(state, "delete", "-n", "kube-system", "--wait=false", *(f"pod/{p}" for p in pods))
    if done.returncode != 0:
        sys.exit(f"error: pulling the images onto the nodes: {done.stderr}")


def load_images(state: dict, started: float) -> None:
    """Build the images (a no-op when cached), push what the registry lacks, pull them onto
    every node, and record their names in the state: `cluster.image(name)` reads them there,
    so a cluster's tests use the images it was loaded with."""
    images.build_all()
    phase("images built (podman)", started)
    images.push(state["registry"])
    phase("images pushed to the cluster registry", started)
    built = images.load_images()
    state["images"] = {
        name: f"{node_setup.REGISTRY}/{entry['ref']}"
        for name, entry in built.items()
        if entry.get("built")
    }
    STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")
    node_list = node_setup.load(nodes_file(), state["slot"])
    if nodes_ready(state):
        prepull(state, node_list)
        # The builds these replaced are dead weight on a shared disk (6 GB each for the
        # runner): a running container keeps its snapshot until it ends.
        keep = set(state["images"].values())
        for node in node_list:
            node_setup.prune_images(node, keep)
        node_setup.share_image_layers(node_list)
        phase("images on every node", started)


def nodes_file() -> Path:
    return Path(os.environ.get("KONDENSE_CLUSTER_NODES", HERE / "nodes.json")).resolve()


def up() -> None:
    repo_lock()
    state = load_state()
    if state is not None and healthy_within(state, 15):
        print(f"cluster already up and healthy; kubeconfig: {KUBECONFIG}")
        load_images(state, time.monotonic())
        return
    if state is not None:
        print("found a stale or unhealthy cluster; replacing it", file=sys.stderr)
        down(quiet=True)
    started = time.monotonic()
    print("cluster-up phases:")
    ensure_packages()
    phase("debian packages", started)
    tools = build_binaries()
    phase("binaries (kubernetes, coredns, registry)", started)
    images.build_all()  # before the cluster starts: the first build takes many minutes
    phase("images built (podman)", started)

    shutil.rmtree(STATE_DIR, ignore_errors=True)
    (STATE_DIR / "logs").mkdir(parents=True)
    (STATE_DIR / "bin").mkdir()
    (STATE_DIR / "bin" / "kubectl").symlink_to(tools["bin"] / "kubectl")
    slot = netns.free_slot()
    node_list = node_setup.load(nodes_file(), slot)
    names = [n.name for n in node_list]
    pki = STATE_DIR / "pki"
    make_pki(pki, names)
    token = secrets.token_hex(24)
    (pki / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    ports = {"apiserver": free_port(), "registry": free_port(), "s3": free_port()}
    server = f"https://127.0.0.1:{ports['apiserver']}"
    write_kubeconfig(KUBECONFIG, server, pki / "ca.crt", {"token": token})
    internal = f"https://{APISERVER}"
    write_kubeconfig(STATE_DIR / "kubeconfig-internal", internal, pki / "ca.crt", {"token": token})
    (STATE_DIR / "registry.yml").write_text(registry_config())
    (STATE_DIR / "Corefile").write_text(corefile())
    state = {
        "slot": slot,
        "bin": str(tools["bin"]),
        "server": server,
        "registry": f"127.0.0.1:{ports['registry']}",
        "s3": f"http://127.0.0.1:{ports['s3']}",
        "s3InCluster": S3_IN_CLUSTER,
        "imageRegistry": node_setup.REGISTRY,
        "token": token,
        "ports": ports,
        "nodes": names,
        "pids": {},
    }

    def save() -> None:
        STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")

    save()
    netns.create(slot, names)
    phase("network namespaces", started)
    deadline = time.monotonic() + START_TIMEOUT_S
    commands = control_plane_commands(state, tools)
    state["argv"] = commands  # what `restart` (bench/chaos.py) runs again
    for name in CONTROL_PLANE:
        state["pids"][name] = spawn(name, commands[name])
        save()
        if name == "etcd":
            wait_for("etcd", lambda: component_health(state)["etcd"], deadline, state)
        if name == "forward":
            wait_for("kube-apiserver", lambda: http_ok(f"{server}/readyz", state), deadline, state)
    wait_for("the registry", lambda: component_health(state)["registry"], deadline, state)
    phase("control plane", started)
    load_images(state, started)  # nodes are not up yet: build (cached) and push only
    pause = state["images"]["pause"]
    deadline = time.monotonic() + START_TIMEOUT_S  # the push above may take minutes
    for node in node_list:
        kubelet_kubeconfig = node.root / "kubelet.kubeconfig"
        proxy_kubeconfig = node.root / "kube-proxy.kubeconfig"
        node.root.mkdir(parents=True, exist_ok=True)
        crt = {"client-certificate": str(pki / f"kubelet-{node.name}.crt")}
        crt["client-key"] = str(pki / f"kubelet-{node.name}.key")
        write_kubeconfig(kubelet_kubeconfig, internal, pki / "ca.crt", crt)
        crt = {"client-certificate": str(pki / "kube-proxy.crt")}
        crt["client-key"] = str(pki / "kube-proxy.key")
        write_kubeconfig(proxy_kubeconfig, internal, pki / "ca.crt", crt)
        node_setup.prepare(node, pki / "ca.crt", proxy_kubeconfig, pause)
        state["argv"].update(node_setup.commands(node, tools["bin"], kubelet_kubeconfig))
    # containerd first: a kubelet that finds the CRI not yet serving exits at once.
    for node in node_list:
        name = f"{node.name}/containerd"
        state["pids"][name] = spawn(name, state["argv"][name])
    save()
    for node in node_list:
        wait_for(f"{node.name}'s CRI", lambda n=node: cri_ready(tools, n), deadline, state)
        for name in (f"{node.name}/kubelet", f"{node.name}/kube-proxy"):
            state["pids"][name] = spawn(name, state["argv"][name])
    save()
    wait_for("all components healthy", lambda: healthy(state), deadline, state)
    wait_for("nodes Ready", lambda: nodes_ready(state), deadline, state)
    for node in node_list:
        advertise_node_extras(state, node)
    dns = {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")}
    outside_service(state, "kube-dns", dns, ip=node_setup.CLUSTER_DNS)  # CoreDNS
    outside_service(state, "s3", {"http": (S3_PORT, "TCP")})
    wait_for(
        "the default service account",
        lambda: kubectl_json(state, "get", "serviceaccount", "default", "-n", "default"),
        deadline,
        state,
    )
    phase("nodes Ready", started)
    load_images(state, started)  # now onto the nodes
    print(f"cluster up in {time.monotonic() - started:.1f}s: {server}; kubeconfig: {KUBECONFIG}")
    print(f"  export KUBECONFIG={KUBECONFIG}; export PATH={STATE_DIR / 'bin'}:$PATH")


def stop_process(name: str, pid: int | None, grace: float = 10) -> None:
    marker = process_marker(name)
    if not pid or not pid_alive(pid, marker):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid, marker):
        os.kill(pid, signal.SIGKILL)


def current_images() -> set[str]:
    """The full names of the images built now (build/images.json), as nodes pull them."""
    try:
        built = images.load_images()
    except SystemExit:
        return set()
    return {f"{node_setup.REGISTRY}/{e['ref']}" for e in built.values() if e.get("built")}


def prune_registry(state: dict) -> None:
    """Untag what the registry holds beyond the images this cluster was loaded with and the
    current builds, then collect the garbage with the registry's own offline collector. Run
    once the registry has stopped (at `down`), after every current image was pushed: the
    layers those share with older builds stay."""
    argv = state.get("argv", {}).get("registry")
    config = STATE_DIR / "registry.yml"
    if not argv or not config.exists():
        return
    loaded = {ref.split("/", 1)[1] for ref in state.get("images", {}).values()}
    keep = loaded | {ref.split("/", 1)[1] for ref in current_images()}
    root = Path(yaml_value(config.read_text(), "rootdirectory"))
    repositories = root / "docker" / "registry" / "v2" / "repositories"
    removed = 0
    for tags in repositories.glob("**/_manifests/tags"):
        repository = tags.parent.parent.relative_to(repositories).as_posix()
        for tag in tags.iterdir():
            if f"{repository}:{tag.name}" not in keep:
                shutil.rmtree(tag)
                removed += 1
    if removed:
        binary = argv[argv.index("--") + 1]  # the command after nsenter's
        subprocess.run(
            [binary, "garbage-collect", "--delete-untagged", str(config)],
            capture_output=True,
            check=False,
        )


def yaml_value(text: str, key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if key in line)


def stop(state: dict) -> None:
    """Stop the nodes (kubelet first, then kube-proxy and containerd, then their containers),
    then the control plane in reverse order, then remove the network namespaces."""
    slot = state.get("slot")
    node_list = node_setup.load(nodes_file(), slot) if slot is not None else []
    node_list = [n for n in node_list if n.name in state.get("nodes", [])]
    keep = current_images()
    for node in node_list:
        name = f"{node.name}/containerd"
        if pid_alive(state["pids"].get(name, 0), "containerd"):
            node_setup.prune_images(node, keep)
        for process in NODE_PROCESSES[::-1]:
            name = f"{node.name}/{process}"
            stop_process(name, state["pids"].get(name))
        node_setup.clean(node)
    for name in CONTROL_PLANE[::-1]:
        stop_process(name, state["pids"].get(name))
    prune_registry(state)
    if slot is not None:
        netns.delete(slot, [n.name for n in node_list])
        # Test volumes (hostPath PersistentVolumes, tests/fixtures/cluster.py make_volume).
        shutil.rmtree(node_setup.NODES_ROOT / str(slot) / "volumes", ignore_errors=True)


def down(quiet: bool = False) -> None:
    repo_lock()
    state = load_state()
    if state is not None:
        stop(state)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    if not quiet:
        print("cluster down")


def status() -> int:
    state = load_state()
    if state is None:
        print("cluster: down (no .cluster/state.json)")
        return 1
    health = component_health(state)
    for name, ok in health.items():
        print(f"{name:24} pid {state['pids'].get(name)!s:8} {'ok' if ok else 'DOWN'}")
    if all(health.values()):
        print(f"server: {state['server']}  kubeconfig: {KUBECONFIG}")
        out = kubectl(state, "get", "nodes", "-o", "wide", "-L", "kondense.dev/pool")
        print(out.stdout, end="")
        return 0
    return 1


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "up":
        up()
    elif command == "down":
        down()
    elif command == "status":
        sys.exit(status())
    elif command == "build":
        print(build_binaries()["bin"])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
