"""Forward TCP ports on the host's 127.0.0.1 to addresses inside a network namespace.

    python tests/cluster/forward.py NETNS LPORT=ADDRESS:PORT [LPORT=ADDRESS:PORT ...]

The listening sockets are made first, in the host's namespace; then the process enters NETNS,
so every outgoing connection is made from inside it. This is how the host's tests, kubectl,
Helm and podman reach the apiserver, the registry and the test servers of the local cluster
without any cluster address on the host. Standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import netns

CHUNK = 1 << 16


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                s.shutdown(how)


def serve(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main() -> None:
    name, *routes = sys.argv[1:]
    listeners = []
    for route in routes:
        local, target = route.split("=")
        address, port = target.rsplit(":", 1)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(local)))
        s.listen(128)
        listeners.append((s, (address, int(port))))
    # From here on, this thread and every thread it starts connect from inside the namespace.
    with netns.entered(name):
        threads = [threading.Thread(target=serve, args=pair, daemon=True) for pair in listeners]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


if __name__ == "__main__":
    main()
