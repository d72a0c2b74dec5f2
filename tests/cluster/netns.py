"""The local cluster's network: one network namespace per machine, joined by a bridge.

    kondense-<slot>            the control plane's namespace; holds the bridge (10.200.0.1/24),
                               the apiserver, etcd, the registry, CoreDNS and the test servers
    kondense-<slot>-<node>     one per node: its kubelet, containerd, kube-proxy and pods,
                               eth0 = 10.200.0.<10+i>/24, pods in 10.244.<i>.0/24

Every address the cluster uses lives inside these namespaces, as kind's nodes live inside
containers; nothing is bound to the host's own interfaces. The host reaches servers inside
through forward.py, which listens on 127.0.0.1 and connects from inside the namespace.
Standard library only (and `ip` from iproute2).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

NETNS_DIR = Path("/run/netns")
BRIDGE = "kbr0"
GATEWAY = "10.200.0.1"
PREFIX = "10.200.0"
POD_CIDR = "10.244.0.0/16"
CLONE_NEWNET = 0x40000000


def cp_namespace(slot: int) -> str:
    return f"kondense-{slot}"


def node_namespace(slot: int, node: str) -> str:
    return f"kondense-{slot}-{node}"


def node_address(index: int) -> str:
    return f"{PREFIX}.{10 + index}"


def pod_subnet(index: int) -> str:
    return f"10.244.{index}.0/24"


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def free_slot() -> int:
    """The lowest slot no other checkout's cluster holds (its namespace would exist)."""
    slot = 0
    while exists(cp_namespace(slot)):
        slot += 1
    return slot


def ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")


def sysctl(netns: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl (net.*) by writing /proc/sys from inside the namespace."""
    with entered(netns):
        Path("/proc/sys", *key.split(".")).write_text(value)


def nsenter(netns: str) -> list[str]:
    """argv prefix that runs a command in the namespace's network only: the mount namespace
    stays the host's, so kubelet's volume mounts are visible to containerd and runc."""
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--"]


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the calling thread inside the namespace: sockets made here stay in it."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            yield
        finally:
            libc.setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)


def create(slot: int, nodes: list[str]) -> None:
    """The control plane's namespace with the bridge, and one namespace per node on it."""
    cp = cp_namespace(slot)
    ip("netns", "add", cp)
    ip("link", "set", "lo", "up", netns=cp)
    ip("link", "add", BRIDGE, "type", "bridge", netns=cp)
    ip("addr", "add", f"{GATEWAY}/24", "dev", BRIDGE, netns=cp)
    ip("link", "set", BRIDGE, "up", netns=cp)
    sysctl(cp, "net.ipv4.ip_forward", "1")
    for i, node in enumerate(nodes):
        ns = node_namespace(slot, node)
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", netns=ns)
        # Create the pair inside the node's namespace, then move the peer to the bridge.
        peer = f"v{slot}-{node}"[:15]
        ip("link", "add", "eth0", "type", "veth", "peer", "name", peer, netns=ns)
        ip("link", "set", peer, "netns", cp, netns=ns)
        ip("link", "set", peer, "master", BRIDGE, netns=cp)
        ip("link", "set", peer, "up", netns=cp)
        ip("addr", "add", f"{node_address(i)}/24", "dev", "eth0", netns=ns)
        ip("link", "set", "eth0", "up", netns=ns)
        ip("route", "add", "default", "via", GATEWAY, netns=ns)
        sysctl(ns, "net.ipv4.ip_forward", "1")
        sysctl(ns, "net.bridge.bridge-nf-call-iptables", "1")
        ip("route", "add", pod_subnet(i), "via", node_address(i), netns=cp)
        for j, _ in enumerate(nodes):
            if j != i:
                ip("route", "add", pod_subnet(j), "via", node_address(j), netns=ns)


def delete(slot: int, nodes: list[str]) -> None:
    """Remove the namespaces (their links go with them). Missing ones are fine."""
    for name in [node_namespace(slot, n) for n in nodes] + [cp_namespace(slot)]:
        if exists(name):
            with contextlib.suppress(RuntimeError):
                ip("netns", "delete", name)
