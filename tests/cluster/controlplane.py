"""Start, stop and inspect the local Kubernetes control plane used by tests and demos.

    python tests/cluster/controlplane.py up       # build if needed, start or reuse, wait healthy
    python tests/cluster/controlplane.py down     # stop everything, remove .cluster/
    python tests/cluster/controlplane.py status   # one line per component; exit 1 if unhealthy

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the official binaries
built by build.sh; the nodes come from node_agent.py. Everything listens on 127.0.0.1 on
ports picked at start-up and recorded in .cluster/state.json. The admin kubeconfig is
.cluster/kubeconfig and kubectl is linked at .cluster/bin/kubectl. Standard library only.
"""

from __future__ import annotations

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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATE_DIR = REPO / ".cluster"
STATE_FILE = STATE_DIR / "state.json"
KUBECONFIG = STATE_DIR / "kubeconfig"
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# Stop order: the agent first so it can stop the pod processes while the API is still up.
COMPONENTS = ["node-agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
START_TIMEOUT_S = 120


def build_binaries() -> Path:
    """Run build.sh (a no-op when the cache is warm) and return the bin directory."""
    out = subprocess.run(
        [str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    if out.returncode != 0:
        sys.exit(out.returncode)
    return Path(out.stdout.strip().splitlines()[-1])


def _process_marker(name: str) -> str:
    """What identifies a component's process on its command line."""
    return "node_agent.py" if name == "node-agent" else name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    """A private CA, the apiserver serving certificate and the service-account signing key."""
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
    san = ",".join(["IP:127.0.0.1", "IP:10.0.0.1"] + [f"DNS:{n}" for n in names])
    ext = pki / "apiserver.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
        "-keyout", str(pki / "apiserver.key"), "-out", str(pki / "apiserver.csr"),
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", str(pki / "apiserver.csr"), "-days", "3650",
        "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"), "-CAcreateserial",
        "-extfile", str(ext), "-out", str(pki / "apiserver.crt"),
    )  # fmt: skip
    openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


def write_kubeconfig(path: Path, server: str, ca: Path, token: str) -> None:
    # JSON is valid YAML, so kubectl and the Python client both read it.
    import base64

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
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {"name": "kondense-local", "context": {"cluster": "kondense-local", "user": "admin"}}
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


def http_ok(url: str, state: dict, verify: bool = True) -> bool:
    if verify:
        ctx = ssl.create_default_context(cafile=str(STATE_DIR / "pki" / "ca.crt"))
    else:  # controller-manager and scheduler serve health on a self-signed certificate
        ctx = ssl._create_unverified_context()
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {state['token']}"})
    try:
        with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
            return bool(r.status == 200)
    except (OSError, ValueError):
        return False


def component_health(state: dict) -> dict[str, bool]:
    p = state["ports"]
    api = f"https://127.0.0.1:{p['apiserver']}"
    checks = {
        "etcd": lambda: http_ok(f"http://127.0.0.1:{p['etcd']}/health", state),
        "kube-apiserver": lambda: http_ok(f"{api}/readyz", state),
        "kube-controller-manager": lambda: http_ok(
            f"https://127.0.0.1:{p['controller-manager']}/healthz", state, verify=False
        ),
        "kube-scheduler": lambda: http_ok(
            f"https://127.0.0.1:{p['scheduler']}/healthz", state, verify=False
        ),
        "node-agent": lambda: True,
    }
    health = {}
    for name in COMPONENTS:
        pid = state["pids"].get(name)
        marker = _process_marker(name)
        health[name] = bool(pid) and pid_alive(pid, marker) and checks[name]()
    return health


def healthy(state: dict | None) -> bool:
    return state is not None and all(component_health(state).values())


# The processes this run started: while `up` waits, a child that exits is seen through poll().
STARTED: dict[str, subprocess.Popen] = {}


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    with open(STATE_DIR / "logs" / f"{name}.log", "ab") as log:
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


def wait_for(what: str, ok, deadline: float, state: dict) -> None:
    while time.monotonic() < deadline:
        if ok():
            return
        for name, proc in STARTED.items():
            if proc.poll() is not None:
                tail = (STATE_DIR / "logs" / f"{name}.log").read_text()[-3000:]
                stop_processes(state)
                sys.exit(f"error: {name} exited while waiting for {what}:\n{tail}")
        time.sleep(0.2)
    stop_processes(state)
    sys.exit(f"error: timed out waiting for {what}; logs in {STATE_DIR / 'logs'}")


def kubectl_json(state: dict, *args: str) -> dict | None:
    out = subprocess.run(
        [state["bin"] + "/kubectl", "--kubeconfig", str(KUBECONFIG), *args, "-o", "json"],
        capture_output=True,
        text=True,
    )
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


def up() -> None:
    repo_lock()
    state = load_state()
    if healthy_within(state, 15):
        print(f"cluster already up and healthy; kubeconfig: {KUBECONFIG}")
        return
    if state is not None:
        print("found a stale or unhealthy cluster; replacing it", file=sys.stderr)
        down(quiet=True)
    bin_dir = build_binaries()
    started = time.monotonic()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    (STATE_DIR / "logs").mkdir(parents=True)
    (STATE_DIR / "bin").mkdir()
    (STATE_DIR / "bin" / "kubectl").symlink_to(bin_dir / "kubectl")
    pki = STATE_DIR / "pki"
    make_pki(pki)
    token = secrets.token_hex(24)
    (pki / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    names = ["etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler"]
    ports = {k: free_port() for k in names}
    server = f"https://127.0.0.1:{ports['apiserver']}"
    write_kubeconfig(KUBECONFIG, server, pki / "ca.crt", token)
    nodes_file = Path(os.environ.get("KONDENSE_CLUSTER_NODES", HERE / "nodes.json")).resolve()
    node_names = [n["name"] for n in json.loads(nodes_file.read_text())]
    state = {
        "bin": str(bin_dir),
        "server": server,
        "token": token,
        "ports": ports,
        "nodes": node_names,
        "pids": {},
    }

    def save() -> None:
        STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
    state["pids"]["etcd"] = spawn(
        "etcd",
        [
            f"{bin_dir}/etcd",
            "--name=default",
            f"--data-dir={STATE_DIR / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync",  # test data only; saves seconds on slow disks
            "--log-level=warn",
        ],
    )
    save()
    deadline = time.monotonic() + START_TIMEOUT_S
    wait_for("etcd", lambda: http_ok(f"{etcd_url}/health", state), deadline, state)

    state["pids"]["kube-apiserver"] = spawn(
        "kube-apiserver",
        [
            f"{bin_dir}/kube-apiserver",
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # PodSecurity, not this flag, is what refuses privileged pods in restricted namespaces.
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ],
    )
    save()
    wait_for("kube-apiserver", lambda: http_ok(f"{server}/readyz", state), deadline, state)

    state["pids"]["kube-controller-manager"] = spawn(
        "kube-controller-manager",
        [
            f"{bin_dir}/kube-controller-manager",
            f"--kubeconfig={KUBECONFIG}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller-manager']}",
            f"--cert-dir={pki / 'kcm'}",
            "--leader-elect=false",
            "--controllers=*",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--profiling=false",
            "--v=1",
        ],
    )
    state["pids"]["kube-scheduler"] = spawn(
        "kube-scheduler",
        [
            f"{bin_dir}/kube-scheduler",
            f"--kubeconfig={KUBECONFIG}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            f"--cert-dir={pki / 'scheduler'}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ],
    )
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    env = dict(os.environ, KUBECONFIG=str(KUBECONFIG), PYTHONUNBUFFERED="1")
    state["pids"]["node-agent"] = spawn(
        "node-agent",
        [python, str(HERE / "node_agent.py"), "--nodes", str(nodes_file)],
        env=env,
    )
    save()
    wait_for("all components healthy", lambda: healthy(state), deadline, state)
    wait_for("nodes Ready", lambda: nodes_ready(state), deadline, state)
    wait_for(
        "the default service account",
        lambda: kubectl_json(state, "get", "serviceaccount", "default", "-n", "default"),
        deadline,
        state,
    )
    took = time.monotonic() - started
    print(f"cluster up in {took:.1f}s: {server}; kubeconfig: {KUBECONFIG}")
    print(f"  export KUBECONFIG={KUBECONFIG}; export PATH={STATE_DIR / 'bin'}:$PATH")


def stop_processes(state: dict) -> None:
    for name in COMPONENTS:
        pid = state["pids"].get(name)
        marker = _process_marker(name)
        if not pid or not pid_alive(pid, marker):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + (20 if name == "node-agent" else 10)
        while pid_alive(pid, marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid, marker):
            os.kill(pid, signal.SIGKILL)


def stop_orphaned_pods() -> None:
    """Kill pod processes a dead node agent left behind (it records pid and start time)."""
    for pid_file in STATE_DIR.glob("pods/*/containers/*/pid"):
        try:
            pid_text, start = pid_file.read_text().split()
            pid = int(pid_text)
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            continue
        if stat.rsplit(")", 1)[1].split()[19] == start:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def remove_placeholders() -> None:
    """Remove mount points a dead node agent created on the host, if still empty."""
    try:
        paths = [Path(p) for p in (STATE_DIR / "placeholders").read_text().splitlines() if p]
    except OSError:
        return
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.rmdir()
            elif path.stat().st_size == 0:
                path.unlink()


def down(quiet: bool = False) -> None:
    repo_lock()
    state = load_state()
    if state is not None:
        stop_processes(state)
    stop_orphaned_pods()
    remove_placeholders()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    if not quiet:
        print("cluster down")


def status() -> int:
    state = load_state()
    if state is None:
        print("cluster: down (no .cluster/state.json)")
        return 1
    health = component_health(state)
    for name in reversed(COMPONENTS):
        print(f"{name:24} pid {state['pids'].get(name)!s:8} {'ok' if health[name] else 'DOWN'}")
    if all(health.values()):
        print(f"server: {state['server']}  kubeconfig: {KUBECONFIG}")
        nodes = kubectl_json(state, "get", "nodes") or {"items": []}
        for n in nodes["items"]:
            conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
            pool = n["metadata"].get("labels", {}).get("kondense.dev/pool", "-")
            print(f"node {n['metadata']['name']:10} pool={pool:4} Ready={conds.get('Ready')}")
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
        print(build_binaries())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
