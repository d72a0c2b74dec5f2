"""The local cluster's nodes: a real kubelet, containerd, runc and kube-proxy per node.

Each node has its own network namespace (netns.py), its own containerd (socket, root, state),
its own kubelet root and cgroup root, and its own client certificate (the Node authorizer
admits it as system:node:<name>). Pods get their network from the standard CNI plugins
(bridge, host-local, portmap) and Services from kube-proxy in iptables mode. This module
writes the configuration files and returns the command lines; controlplane.py runs them.
Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import netns

# Node state lives outside the checkout: containerd's overlay snapshots and socket paths need
# a short, local path. The image store is kept across `cluster-down` (see keep_images).
NODES_ROOT = Path(os.environ.get("KONDENSE_NODES_ROOT", "/var/lib/kondense"))
CNI_BIN = Path("/usr/lib/cni")
CLUSTER_DNS = "10.96.0.10"
REGISTRY_PORT = 5000
REGISTRY = f"{netns.GATEWAY}:{REGISTRY_PORT}"


@dataclass(frozen=True)
class Node:
    name: str
    index: int
    slot: int
    labels: dict[str, str]
    taints: list[dict[str, str]]
    extended: dict[str, str]  # extended resources to advertise (nvidia.com/gpu)
    annotations: dict[str, str]

    @property
    def netns(self) -> str:
        return netns.node_namespace(self.slot, self.name)

    @property
    def address(self) -> str:
        return netns.node_address(self.index)

    @property
    def root(self) -> Path:
        return NODES_ROOT / str(self.slot) / self.name

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        return f"/kondense-{self.slot}-{self.name}"


def load(nodes_file: Path, slot: int) -> list[Node]:
    return [
        Node(
            name=n["name"],
            index=i,
            slot=slot,
            labels=n.get("labels", {}),
            taints=n.get("taints", []),
            extended=n.get("extendedResources", {}),
            annotations=n.get("annotations", {}),
        )
        for i, n in enumerate(json.loads(nodes_file.read_text()))
    ]


def containerd_config(node: Node, pause: str) -> str:
    certs = node.root / "certs.d"
    hosts = certs / REGISTRY / "hosts.toml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    # The cluster's registry speaks plain HTTP inside the cluster network, as kind's local
    # registry does; containerd is told so per host.
    hosts.write_text(
        f'server = "http://{REGISTRY}"\n\n[host."http://{REGISTRY}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    return f"""version = 2
root = "{node.root / "containerd"}"
state = "{node.root / "state"}"
[grpc]
  address = "{node.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # No CAP_SYS_RESOURCE here: without this every sandbox fails to start (local-cluster notes).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{node.root / "cni"}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"""


def cni_config(node: Node) -> dict:
    return {
        "cniVersion": "0.4.0",
        "name": "kondense",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(node.root / "ipam"),
                    "ranges": [[{"subnet": netns.pod_subnet(node.index)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(node: Node, ca: Path) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The host has cgroup v1 in hybrid mode: cgroupfs, and crun is not used.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        # Three kubelets share the host's cgroup tree: each gets its own root.
        "cgroupRoot": node.cgroup_root,
        "cgroupsPerQOS": True,
        "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE: it cannot lower its own score
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "address": node.address,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        # Each kubelet removes the log folders of pods it does not know: three sharing the
        # default /var/log/pods deleted each other's logs.
        "podLogsDir": str(node.root / "pod-logs"),
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "registerNode": True,
        "serializeImagePulls": False,
        "enforceNodeAllocatable": [],
        "localStorageCapacityIsolation": True,
        "imageGCHighThresholdPercent": 95,
        "imageGCLowThresholdPercent": 90,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
        },
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
    }


def kube_proxy_config(node: Node, kubeconfig: Path) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "hostnameOverride": node.name,
        "bindAddress": node.address,
        "clusterCIDR": netns.POD_CIDR,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
        "oomScoreAdj": 0,
        # Leave the (host-wide) conntrack table size as it is.
        "conntrack": {"maxPerCore": 0, "min": 0},
    }


def prepare(node: Node, ca: Path, proxy_kubeconfig: Path, pause: str) -> None:
    """Write the node's configuration files; pause is the sandbox image's full name."""
    for sub in ("kubelet", "cni", "ipam", "logs"):
        (node.root / sub).mkdir(parents=True, exist_ok=True)
    (node.root / "containerd.toml").write_text(containerd_config(node, pause))
    (node.root / "cni" / "10-kondense.conflist").write_text(json.dumps(cni_config(node)))
    (node.root / "kubelet.json").write_text(json.dumps(kubelet_config(node, ca)))
    (node.root / "kube-proxy.json").write_text(
        json.dumps(kube_proxy_config(node, proxy_kubeconfig))
    )
    # kubelet creates its QoS cgroups under cgroupRoot, which must exist in every hierarchy.
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if hierarchy.name != "unified" and (hierarchy / "cgroup.procs").exists():
            (hierarchy / node.cgroup_root.lstrip("/")).mkdir(exist_ok=True)


def commands(node: Node, bin_dir: Path, kubelet_kubeconfig: Path) -> dict[str, list[str]]:
    """The node's processes, each run in its network namespace."""
    enter = netns.nsenter(node.netns)
    taints = ",".join(f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in node.taints)
    labels = ",".join(f"{k}={v}" for k, v in node.labels.items())
    kubelet = [
        *enter,
        str(bin_dir / "kubelet"),
        f"--config={node.root / 'kubelet.json'}",
        f"--kubeconfig={kubelet_kubeconfig}",
        f"--root-dir={node.root / 'kubelet'}",
        f"--cert-dir={node.root / 'kubelet' / 'pki'}",
        f"--hostname-override={node.name}",
        f"--node-ip={node.address}",
        f"--node-labels={labels}",
        "--v=1",
    ]
    if taints:
        kubelet.append(f"--register-with-taints={taints}")
    return {
        f"{node.name}/containerd": [
            *enter,
            "containerd",
            f"--config={node.root / 'containerd.toml'}",
            "--log-level=warn",
        ],
        f"{node.name}/kubelet": kubelet,
        f"{node.name}/kube-proxy": [
            *enter,
            str(bin_dir / "kube-proxy"),
            f"--config={node.root / 'kube-proxy.json'}",
            "--v=1",
        ],
    }


def share_image_layers(node_list: list[Node]) -> None:
    """Hard-link the files the nodes' unpacked image layers have in common. The three nodes
    share this machine's disk, and each holds its own copy of every layer (6 GB for the
    runner): committed snapshots are never written in place (containers write to their own
    upper directory), so identical files (content, mode, owner, times) can be one inode, as
    in a content-addressed store. util-linux `hardlink`; a no-op for files linked already."""
    snapshots = [
        node.root / "containerd" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
        for node in node_list
    ]
    existing = [str(s) for s in snapshots if s.exists()]
    if len(existing) > 1:
        subprocess.run(["hardlink", "--quiet", *existing], capture_output=True, check=False)


def prune_images(node: Node, keep: set[str]) -> None:
    """Remove the images this node's containerd holds beyond `keep` (full names), so the
    store kept across clusters holds only the current builds. The references CRI adds for a
    kept image (its repository digest, its id) stay: kubelet reports the digest as imageID."""
    ctr = ["ctr", "--address", str(node.socket), "--namespace", "k8s.io"]
    listed = subprocess.run([*ctr, "images", "ls"], capture_output=True, text=True)
    if listed.returncode != 0:
        return
    rows = [line.split() for line in listed.stdout.splitlines()[1:] if line.strip()]
    kept_digests = {row[2] for row in rows if row[0] in keep}
    stale = [row[0] for row in rows if row[0] not in keep and row[2] not in kept_digests]
    if stale:
        subprocess.run([*ctr, "images", "rm", "--sync", *stale], capture_output=True)


def _cgroup_pids(node: Node) -> set[int]:
    pids: set[int] = set()
    root = Path("/sys/fs/cgroup/pids") / node.cgroup_root.lstrip("/")
    for procs in root.rglob("cgroup.procs") if root.exists() else []:
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


def _shim_pids(node: Node) -> set[int]:
    """containerd-shim processes of this node's containerd (named by its socket)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes()
            if b"containerd-shim" in cmd and str(node.socket).encode() in cmd:
                pids.add(int(proc.name))
    return pids


def _remove_cgroups(node: Node) -> None:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / node.cgroup_root.lstrip("/")
        if not top.exists():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def unmount_under(path: Path) -> None:
    """Unmount everything mounted below path, deepest first (volumes, rootfs, pod netns)."""
    prefix = str(path) + "/"
    mounts = [
        line.split()[1].encode().decode("unicode_escape")
        for line in Path("/proc/self/mounts").read_text().splitlines()
    ]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def clean(node: Node, keep_images: bool = True) -> None:
    """After the node's processes stopped: kill its containers, unmount, remove its state.
    keep_images keeps containerd's image store, so the next cluster pulls nothing."""
    for pid in _cgroup_pids(node) | _shim_pids(node):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (_cgroup_pids(node) or _shim_pids(node)) and time.monotonic() < deadline:
        time.sleep(0.1)
    unmount_under(node.root)
    _remove_cgroups(node)
    if not node.root.exists():
        return
    keep = {"containerd"} if keep_images else set()
    for entry in node.root.iterdir():
        if entry.name not in keep:
            subprocess.run(["rm", "-rf", "--one-file-system", str(entry)], check=False)
