#!/usr/bin/env python3
"""Builds the project's container images with podman and pushes them to a registry.

    python3 images/build.py build                      # what `make images` runs
    python3 images/build.py push --registry 127.0.0.1:5000
    python3 images/build.py ref runner-cpu             # kondense/runner-cpu:<hash>

The images are the Dockerfiles users build (images/*.Dockerfile, context: the repository root)
plus the pod sandbox image built from images/pause/pause.c. Each tag is a hash of everything that
goes into the image (the Dockerfile, the files it copies, the base image's id, the build args):
when podman already has that tag nothing is built. build/images.json records the result.

The public base (python:3.12.8-slim-bookworm) is used when podman has it or can pull it within
seconds; otherwise a Debian bookworm base is built from Debian's packages with mmdebstrap and
passed in through the Dockerfiles' PYTHON_IMAGE build arg. KONDENSE_IMAGE_BASE=public|local
forces one (default auto).

Standard library only: the cluster setup imports it (image_path, push) as well as running it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES_JSON = ROOT / "build" / "images.json"
CACHE_ROOT = Path(
    os.environ.get("KONDENSE_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kondense"
)
LOCK = CACHE_ROOT / ".images-build.lock"

# runc and cgroupfs: crun refuses this host's hybrid cgroups and there is no systemd.
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
# Explicit rlimits at most the current hard limits: podman's defaults raise them, and raising
# needs CAP_SYS_RESOURCE, which this VM drops (runc: "error setting rlimits ... not permitted").
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
RUN_FLAGS = [*ULIMITS]
BUILD_FLAGS = [
    "--network",
    "host",
    *ULIMITS,
    # Layer cache on (podman's default): runner-cpu's dependency layers (GBs) are reused until
    # pyproject.toml changes, so a code change rebuilds, pushes and pulls a small layer only.
    "--layers",
]
DEBIAN_PACKAGES = ["podman", "mmdebstrap", "runc", "gcc", "libc6-dev"]

PUBLIC_PYTHON = "docker.io/library/python:3.12.8-slim-bookworm"
PUBLIC_CUDA = "docker.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
HOST_CERTS = Path("/etc/ssl/certs")
HOST_CA_BUNDLE = HOST_CERTS / "ca-certificates.crt"
UV_CACHE = Path(
    os.environ.get("UV_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uv"
)

BASE_REPO = "localhost/kondense/base-bookworm"
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates"]
# Bump when the base recipe below changes in a way its arguments don't show.
BASE_REV = "1"
# Bump when how images are built changes in a way the hashed inputs don't show.
BUILD_REV = "1"
PAUSE_TAG = "3.10"
HASH_LABEL = "dev.kondense.content-hash"


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: str  # relative to the repository root
    base_arg: str  # the build ARG that carries the base image ("" for pause)


IMAGES = [
    Image("operator", "images/operator.Dockerfile", "PYTHON_IMAGE"),
    Image("runner-cpu", "images/runner-cpu.Dockerfile", "PYTHON_IMAGE"),
    Image("runner-gpu", "images/runner-gpu.Dockerfile", "CUDA_IMAGE"),
    Image("pause", "images/pause/Dockerfile", ""),
    # The quickstart's in-cluster S3 API server (moto), examples/cluster/.
    Image("s3-test", "images/s3-test.Dockerfile", "PYTHON_IMAGE"),
]


def log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def podman(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PODMAN, *args], check=check, text=True, capture_output=capture, stdin=subprocess.DEVNULL
    )


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def image_inspect(ref: str) -> dict:
    out = podman("image", "inspect", ref).stdout
    return json.loads(out)[0]


def ensure_packages() -> None:
    """The Debian packages the builds use (scripts/debian-packages.sh installs missing ones)."""
    if all(shutil.which(tool) for tool in ("podman", "mmdebstrap", "runc", "gcc")):
        return
    subprocess.run([str(ROOT / "scripts" / "debian-packages.sh"), *DEBIAN_PACKAGES], check=True)


# --- what goes into an image -------------------------------------------------------------------


def copy_sources(dockerfile: Path) -> list[str]:
    """The build-context paths a Dockerfile COPYs or ADDs (not those copied between stages)."""
    sources: list[str] = []
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources.extend(a.rstrip("/") or "." for a in args[:-1])
    return sources


def _ignored(path: Path) -> bool:
    # The same caches .dockerignore keeps out of the build context.
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def hash_tree(digest: hashlib._Hash, context: Path, sources: list[str]) -> None:
    for source in sorted(set(sources)):
        top = context / source
        if not top.exists():
            raise SystemExit(f"images: {source} (copied by a Dockerfile) is missing in {context}")
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            rel = path.relative_to(context)
            if _ignored(rel):
                continue
            executable = os.access(path, os.X_OK)
            digest.update(f"{rel}\0{int(executable)}\0{path.stat().st_size}\0".encode())
            digest.update(path.read_bytes())


def content_hash(
    dockerfile: Path, context: Path, base_id: str, build_args: dict[str, str], extra: str = ""
) -> str:
    """The tag of an image: a hash of its Dockerfile, the files it copies, base and build args."""
    digest = hashlib.sha256()
    digest.update(f"rev {BUILD_REV}\0base {base_id}\0{extra}\0".encode())
    for key in sorted(build_args):
        digest.update(f"arg {key}={build_args[key]}\0".encode())
    digest.update(dockerfile.read_bytes())
    hash_tree(digest, context, copy_sources(dockerfile))
    return digest.hexdigest()[:16]


# --- base images -------------------------------------------------------------------------------


def try_pull(ref: str, timeout: float = 20) -> str:
    """Pulls ref unless podman has it; returns "" on success, else why not (one line)."""
    if image_exists(ref):
        return ""
    try:
        result = subprocess.run(
            [*PODMAN, "pull", "--quiet", ref],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"pulling {ref} took longer than {timeout:.0f}s"
    if result.returncode == 0:
        return ""
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error")] or [
        result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
    ]
    return f"{ref} cannot be pulled here: {lines[-1]}"


def local_base() -> str:
    """A Debian bookworm base from Debian's packages (mmdebstrap), imported into podman."""
    recipe = f"bookworm minbase {','.join(BASE_PACKAGES)} rev {BASE_REV}"
    ref = f"{BASE_REPO}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if image_exists(ref):
        log(f"base {ref} cached")
        return ref
    log(f"building the Debian bookworm base {ref} with mmdebstrap (about a minute)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kondense-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "bookworm",
                str(tar),
            ],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        podman(
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            'CMD ["python3"]',
            str(tar),
            ref,
        )
    log(f"base {ref} built in {time.monotonic() - start:.0f}s")
    return ref


def python_base() -> tuple[str, str]:
    """(base image ref, how it was chosen) for the Python images."""
    mode = os.environ.get("KONDENSE_IMAGE_BASE", "auto")
    if mode not in ("auto", "public", "local"):
        raise SystemExit(f"images: KONDENSE_IMAGE_BASE={mode}: use auto, public or local")
    if mode != "local":
        why = try_pull(PUBLIC_PYTHON)
        if not why:
            return PUBLIC_PYTHON, "public"
        if mode == "public":
            raise SystemExit(f"images: {why}")
        log(f"{why}; using a Debian base built here")
    return local_base(), "local (mmdebstrap, Debian bookworm)"


# --- building ----------------------------------------------------------------------------------


def remove_stale(repo: str, keep: str, previous: int = 1) -> None:
    """Drops older tags of repo (old content hashes), all but the newest `previous` ones: a
    cluster may still be pushing the last one while the tree changes under it."""
    out = podman(
        "images", "--sort", "created", "--format", "{{.Repository}}:{{.Tag}}", repo, check=False
    ).stdout
    # --sort created lists the newest first.
    others = [ref for ref in out.split() if ref != keep and ref.startswith(repo + ":")]
    for ref in others[previous:]:
        image_id = image_inspect(ref)["Id"]
        result = podman("rmi", ref, check=False)
        # An image `rmi <tag>` only untagged (seen here once) would stay, nameless, for good.
        if image_exists(image_id) and not image_inspect(image_id).get("RepoTags"):
            result = podman("rmi", image_id, check=False)
        if result.returncode != 0:
            log(f"could not remove {ref}: {result.stderr.strip()}")


def podman_build(
    tag: str, dockerfile: Path, context: Path, args: dict[str, str], label: str
) -> None:
    cmd = [*PODMAN, "build", *BUILD_FLAGS, "-f", str(dockerfile), "-t", tag]
    cmd += ["--label", f"{HASH_LABEL}={label}"]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    if HOST_CA_BUNDLE.exists():
        # pip inside the build trusts the machine's CA bundle (a TLS-intercepting proxy's).
        cmd += ["--volume", f"{HOST_CERTS}:/etc/ssl/host-certs:ro"]
        cmd += ["--build-arg", "PIP_CERT=/etc/ssl/host-certs/ca-certificates.crt"]
    # uv inside the build reads and fills the machine's uv cache: a rebuild downloads nothing.
    UV_CACHE.mkdir(parents=True, exist_ok=True)
    cmd += ["--volume", f"{UV_CACHE}:/uv-cache", "--build-arg", "UV_CACHE_DIR=/uv-cache"]
    cmd.append(str(context))
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=sys.stderr)


def build_dockerfile(image: Image, base: str, args: dict[str, str]) -> dict:
    dockerfile = ROOT / image.dockerfile
    base_id = image_inspect(base)["Id"]
    build_args = {image.base_arg: base, **args}
    tag = content_hash(dockerfile, ROOT, base_id, build_args)
    path = f"kondense/{image.name}:{tag}"
    local = f"localhost/{path}"
    start = time.monotonic()
    cached = image_exists(local)
    if cached:
        log(f"{image.name}: cached ({path})")
    else:
        log(f"{image.name}: building {path} from {image.dockerfile} on {base}")
        podman_build(local, dockerfile, ROOT, build_args, tag)
        remove_stale(f"localhost/kondense/{image.name}", local)
    seconds = round(time.monotonic() - start, 1)
    if not cached:
        log(f"{image.name}: built in {seconds:.0f}s")
    return {
        "ref": path,
        "built": True,
        "cached": cached,
        "seconds": seconds,
        "size_bytes": int(image_inspect(local)["Size"]),
        "base": base,
        "build_args": dict(args),
    }


def build_pause() -> dict:
    """kondense/pause:3.10 FROM scratch with a static pause binary compiled here."""
    image = next(i for i in IMAGES if i.name == "pause")
    dockerfile = ROOT / image.dockerfile
    source = dockerfile.parent / "pause.c"
    cflags = ["-static", "-O2", "-Wall"]
    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True, check=True)
    digest = hashlib.sha256(f"rev {BUILD_REV}\0{cflags}\0gcc {gcc.stdout.strip()}\0".encode())
    digest.update(dockerfile.read_bytes())
    digest.update(source.read_bytes())
    label = digest.hexdigest()[:16]
    path = f"kondense/pause:{PAUSE_TAG}"
    local = f"localhost/{path}"
    start = time.monotonic()
    cached = image_exists(local) and image_inspect(local).get("Labels", {}).get(HASH_LABEL) == label
    if cached:
        log(f"pause: cached ({path})")
    else:
        old = image_inspect(local)["Id"] if image_exists(local) else ""
        log(f"pause: building {path} from {source.relative_to(ROOT)}")
        with tempfile.TemporaryDirectory(prefix="kondense-pause-") as tmp:
            subprocess.run(["gcc", *cflags, "-o", f"{tmp}/pause", str(source)], check=True)
            shutil.copy(dockerfile, f"{tmp}/Dockerfile")
            podman_build(local, Path(tmp) / "Dockerfile", Path(tmp), {}, label)
        if old and old != image_inspect(local)["Id"]:
            podman("rmi", old, check=False)  # the previous build, now untagged
    return {
        "ref": path,
        "built": True,
        "cached": cached,
        "seconds": round(time.monotonic() - start, 1),
        "size_bytes": int(image_inspect(local)["Size"]),
        "base": "scratch",
        "build_args": {},
    }


def write_json(results: dict[str, dict]) -> None:
    """Updates build/images.json with these entries (a build of some images keeps the others)."""
    IMAGES_JSON.parent.mkdir(parents=True, exist_ok=True)
    known = {i.name for i in IMAGES}
    data = json.loads(IMAGES_JSON.read_text()) if IMAGES_JSON.exists() else {}
    data = {k: v for k, v in data.items() if k in known}
    data.update(results)
    tmp = IMAGES_JSON.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(IMAGES_JSON)


def build_all(names: list[str] | None = None) -> dict[str, dict]:
    """Builds (or finds cached) every image; writes and returns build/images.json's content.
    One build at a time on this machine (podman's storage is shared): others wait here."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another image build holds {LOCK}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_all(names)


def _build_all(names: list[str] | None) -> dict[str, dict]:
    ensure_packages()
    wanted = names or [i.name for i in IMAGES]
    start = time.monotonic()
    results: dict[str, dict] = {}

    python_images = [i for i in IMAGES if i.base_arg == "PYTHON_IMAGE" and i.name in wanted]
    if python_images:
        base, how = python_base()
        log(f"Python base: {base} ({how})")
        for image in python_images:
            results[image.name] = build_dockerfile(image, base, {})
            write_json(results)

    if "runner-gpu" in wanted:
        why = try_pull(PUBLIC_CUDA)
        if why:
            log(f"runner-gpu: not built: {why}")
            results["runner-gpu"] = {"built": False, "reason": f"base {why}"}
        else:
            gpu = next(i for i in IMAGES if i.name == "runner-gpu")
            results["runner-gpu"] = build_dockerfile(gpu, PUBLIC_CUDA, {})
        write_json(results)

    if "pause" in wanted:
        results["pause"] = build_pause()
        write_json(results)

    log(f"done in {time.monotonic() - start:.1f}s; {IMAGES_JSON.relative_to(ROOT)}")
    for name, entry in results.items():
        if entry.get("built"):
            state = "cached" if entry.get("cached") else f"built in {entry['seconds']:.0f}s"
            size = entry["size_bytes"] / 1e6
            print(f"{name:11} {entry['ref']:40} {size:9.1f} MB  {state}")
        else:
            print(f"{name:11} not built: {entry['reason']}")
    return results


# --- registry ----------------------------------------------------------------------------------


def load_images(images_json: Path = IMAGES_JSON) -> dict[str, dict]:
    if not images_json.exists():
        raise SystemExit(f"images: {images_json} is missing: run `make images` first")
    data: dict[str, dict] = json.loads(images_json.read_text())
    return data


def image_path(name: str, images_json: Path = IMAGES_JSON) -> str:
    """The registry path of a built image, e.g. kondense/runner-cpu:<hash>: prefix a registry
    host (the cluster's) to get the name pods pull."""
    entry = load_images(images_json).get(name)
    if not entry or not entry.get("built"):
        why = entry.get("reason", "not built") if entry else "not in images.json"
        raise KeyError(f"image {name}: {why}")
    ref: str = entry["ref"]
    return ref


MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def registry_has(registry: str, path: str) -> bool:
    """HEAD /v2/<name>/manifests/<tag> on a plain-HTTP registry."""
    name, tag = path.rsplit(":", 1)
    request = urllib.request.Request(
        f"http://{registry}/v2/{name}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": MANIFEST_TYPES},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return False
        raise


def push(
    registry: str,
    names: list[str] | None = None,
    compression: str = "zstd",
    images_json: Path = IMAGES_JSON,
) -> dict[str, float]:
    """Pushes every built image to a plain-HTTP registry (host:port) under the same path,
    skipping those whose manifest it already has; returns seconds per image pushed."""
    images = load_images(images_json)
    pushed: dict[str, float] = {}
    for name, entry in images.items():
        if names and name not in names:
            continue
        if not entry.get("built"):
            log(f"{name}: not pushed ({entry.get('reason', 'not built')})")
            continue
        path = entry["ref"]
        # Content-hash tags name their content; pause:3.10 doesn't, and is small: always pushed.
        if name != "pause" and registry_has(registry, path):
            log(f"{name}: {registry}/{path} already in the registry")
            continue
        start = time.monotonic()
        log(f"{name}: pushing {registry}/{path} ({compression})")
        subprocess.run(
            [
                *PODMAN,
                "push",
                "--quiet",
                "--tls-verify=false",
                "--compression-format",
                compression,
                f"localhost/{path}",
                f"{registry}/{path}",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        pushed[name] = round(time.monotonic() - start, 1)
        log(f"{name}: pushed in {pushed[name]:.0f}s")
    return pushed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the images (cached by content hash)")
    b.add_argument("names", nargs="*", help="only these (default: all)")
    p = sub.add_parser("push", help="push the built images to a plain-HTTP registry")
    p.add_argument("--registry", required=True, help="host:port")
    p.add_argument("--compression", default="zstd", choices=["zstd", "gzip"])
    p.add_argument("names", nargs="*", help="only these (default: all built)")
    r = sub.add_parser("ref", help="print an image's registry path (kondense/NAME:TAG)")
    r.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build_all(args.names or None)
        elif args.command == "push":
            push(args.registry, args.names or None, args.compression)
        else:
            print(image_path(args.name))
    except subprocess.CalledProcessError as err:
        cmd = " ".join(str(c) for c in err.cmd)
        print(f"images: failed ({err.returncode}): {cmd}", file=sys.stderr)
        return 1
    except KeyError as err:
        print(f"images: {err.args[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
