"""Start one container process for the node agent: private mounts, working dir, then exec.

    python pod_launch.py SPEC.json

SPEC: {"argv": [...], "env": {...}, "workingDir": str, "mounts": [{"source", "target",
"readOnly"}], "preserve": [paths]}. The process gets its own mount namespace
(unshare(CLONE_NEWNS), propagation private), so the bind mounts of its volumes are seen by
it and its children only and vanish when it exits; the host's file system is left as it
was. Mount targets missing on the host are created by the agent beforehand (and removed
afterwards). `preserve` paths (the repository) stay visible even when a volume is mounted
over one of their ancestors (mountPath /work). Standard library only.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]


def check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source else None
    check(libc.mount(src, target.encode(), None, flags, None), f"mount {source} on {target}")


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if spec["mounts"]:
        check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        mount(None, "/", MS_REC | MS_PRIVATE)
        # A volume mounted over an ancestor of the repo (mountPath /work) would hide the
        # project's environment; keep a handle on it to bind it back on top.
        keep = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in spec.get("preserve", [])}
        # Sources are opened first, as an earlier mount may hide them (they live in the repo);
        # parents are mounted before children, like the kubelet does.
        mounts = sorted(spec["mounts"], key=lambda m: m["target"].rstrip("/").count("/"))
        sources = [os.open(m["source"], os.O_PATH) for m in mounts]
        for m, fd in zip(mounts, sources, strict=True):
            if not os.path.lexists(m["target"]):  # inside a volume mounted just before
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.makedirs(m["target"])
                else:
                    os.makedirs(os.path.dirname(m["target"]), exist_ok=True)
                    open(m["target"], "a").close()
            mount(f"/proc/self/fd/{fd}", m["target"], MS_BIND | MS_REC)
            os.close(fd)
        targets = [m["target"] for m in mounts]
        for path, fd in keep.items():
            if any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets):
                os.makedirs(path, exist_ok=True)
                mount(f"/proc/self/fd/{fd}", path, MS_BIND | MS_REC)
            os.close(fd)
        for m in spec["mounts"]:
            if m.get("readOnly"):
                mount(None, m["target"], MS_BIND | MS_REMOUNT | MS_RDONLY)
    os.chdir(spec["workingDir"])
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        print(f"node agent: cannot start {argv[0]!r}: {exc}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main()
