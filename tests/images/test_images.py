"""The project's images as `make images` builds them (images/build.py), run with podman.

The first build of runner-cpu takes many minutes (PyTorch from PyPI brings its CUDA libraries);
after it every test here takes seconds, because the content-hash tags make a second build a
no-op. That no-op is itself tested.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kondense_images_build", REPO / "images/build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _load_build()


def run_build(*names: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO / "images/build.py"), "build", *names],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return result, elapsed


@pytest.fixture(scope="module")
def images() -> dict[str, dict]:
    """Every image built (or found cached); build/images.json's content."""
    run_build()
    data: dict[str, dict] = json.loads(build.IMAGES_JSON.read_text())
    return data


def podman_run(
    ref: str, *args: str, entrypoint: str | None = None, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    cmd = [*build.PODMAN, "run", "--rm", *build.RUN_FLAGS, *flags]
    if entrypoint:
        cmd += ["--entrypoint", entrypoint]
    return subprocess.run(
        [*cmd, f"localhost/{ref}", *args], capture_output=True, text=True, timeout=300
    )


# --- the content hash (no podman) ------------------------------------------------------------


def test_content_hash_follows_what_the_dockerfile_copies(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("A = 1\n")
    (tmp_path / "other.txt").write_text("not copied\n")
    dockerfile = tmp_path / "x.Dockerfile"
    dockerfile.write_text(
        "ARG BASE\nFROM ${BASE} AS build\nCOPY pkg/ pkg/\nFROM ${BASE}\n"
        "COPY --from=build /opt /opt\n"
    )
    assert build.copy_sources(dockerfile) == ["pkg"]

    def tag(base_id: str = "sha256:1", **args: str) -> str:
        return str(build.content_hash(dockerfile, tmp_path, base_id, dict(args)))

    first = tag()
    assert tag() == first
    (tmp_path / "other.txt").write_text("changed, still not copied\n")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert tag() == first, "files the image doesn't copy (and caches) don't change the tag"
    (tmp_path / "pkg" / "a.py").write_text("A = 2\n")
    assert tag() != first
    assert tag() != tag(base_id="sha256:2")
    assert tag() != tag(UV_CACHE_DIR="/elsewhere")


def test_the_dockerfiles_copy_what_the_package_needs() -> None:
    """Every package directory pyproject.toml maps is copied (kondense.api once was not)."""
    import tomllib

    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    for name in ("operator", "runner-cpu", "runner-gpu"):
        copied = set(build.copy_sources(REPO / f"images/{name}.Dockerfile"))
        missing = set(package_dirs.values()) - copied
        assert not missing, f"images/{name}.Dockerfile does not COPY {sorted(missing)}"


def test_runner_dependencies_install_without_the_package() -> None:
    """runner-cpu's deps stage copies only pyproject.toml and uv.lock and installs the lock's
    requirements without kondense itself, so its (GB) layer outlives every code change."""
    text = (REPO / "images" / "runner-cpu.Dockerfile").read_text()
    deps = text[text.index(" AS deps") : text.index(" AS build")]
    assert re.findall(r"^COPY (.*)$", deps, re.M) == ["pyproject.toml uv.lock ./"]
    assert "uv export --frozen --no-emit-project --extra runner" in deps


# --- the images ------------------------------------------------------------------------------


@pytest.mark.images
@pytest.mark.timeout(3600)
def test_a_second_build_builds_nothing(images: dict[str, dict]) -> None:
    result, elapsed = run_build()
    again = json.loads(build.IMAGES_JSON.read_text())
    for name in ("operator", "runner-cpu", "pause"):
        assert images[name]["built"], f"{name} was not built: {images[name]}"
        assert again[name]["ref"] == images[name]["ref"]
        assert again[name]["cached"] is True, f"{name} was built again:\n{result.stderr}"
        assert f"{name}: cached" in result.stderr
    assert elapsed < 60, f"a cached `make images` took {elapsed:.0f}s"


@pytest.mark.images
@pytest.mark.timeout(3600)
def test_runner_gpu_is_built_or_says_why_not(images: dict[str, dict]) -> None:
    gpu = images["runner-gpu"]
    if not gpu["built"]:
        assert "cannot be pulled" in gpu["reason"] or "longer than" in gpu["reason"], gpu
        assert build.PUBLIC_CUDA in gpu["reason"]
    else:
        assert gpu["ref"].startswith("kondense/runner-gpu:")


@pytest.mark.images
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", ["operator", "runner-cpu"])
def test_image_runs_as_uid_65532(images: dict[str, dict], name: str) -> None:
    result = podman_run(images[name]["ref"], "-c", "id -u; id -g", entrypoint="sh")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["65532", "65532"]


@pytest.mark.images
@pytest.mark.timeout(3600)
def test_runner_cli_works_on_a_read_only_root(images: dict[str, dict]) -> None:
    # Runner pods run with a read-only root; podman's --read-only keeps /tmp writable (tmpfs).
    result = podman_run(images["runner-cpu"]["ref"], "--help", flags=("--read-only",))
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "run" in result.stdout


@pytest.mark.images
@pytest.mark.timeout(3600)
def test_runner_imports_torch_and_onnxruntime(images: dict[str, dict]) -> None:
    code = "import torch, onnxruntime; print(torch.__version__, onnxruntime.__version__)"
    result = podman_run(images["runner-cpu"]["ref"], "-c", code, entrypoint="python3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@pytest.mark.images
@pytest.mark.timeout(3600)
def test_runner_code_is_a_small_layer_of_its_own(images: dict[str, dict]) -> None:
    """The dependencies (GBs) are one layer and kondense another, small one: a code change
    rebuilds, pushes and pulls only that."""
    out = subprocess.run(
        [*build.PODMAN, "history", "--format", "json", f"localhost/{images['runner-cpu']['ref']}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    layers = [h for h in json.loads(out) if h.get("size", 0) > 0]  # newest first
    assert "COPY" in layers[0]["CreatedBy"], layers[0]
    assert layers[0]["size"] < 50e6, layers[0]
    assert max(h["size"] for h in layers) > 1e9, "the dependency layer"


@pytest.mark.images
@pytest.mark.timeout(3600)
def test_operator_cli_starts(images: dict[str, dict]) -> None:
    result = podman_run(images["operator"]["ref"], "--help")
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
    result = podman_run(images["operator"]["ref"], "-c", "import torch", entrypoint="python3")
    assert result.returncode != 0, "the operator image carries no torch"


@pytest.mark.images
@pytest.mark.timeout(3600)
def test_pause_exits_on_sigterm(images: dict[str, dict]) -> None:
    name = f"kondense-pause-test-{uuid.uuid4().hex[:8]}"
    ref = f"localhost/{images['pause']['ref']}"
    run = [*build.PODMAN, "run", "-d", "--name", name, *build.RUN_FLAGS, ref]
    subprocess.run(run, check=True, capture_output=True, text=True)
    try:
        start = time.monotonic()
        # podman stop sends SIGTERM and would SIGKILL after 20 s: pause must be gone at once.
        subprocess.run([*build.PODMAN, "stop", "-t", "20", name], check=True, capture_output=True)
        assert time.monotonic() - start < 10
        state = subprocess.run(
            [*build.PODMAN, "inspect", "--format", "{{.State.ExitCode}}", name],
            capture_output=True,
            text=True,
            check=True,
        )
        assert state.stdout.strip() == "0"
    finally:
        subprocess.run([*build.PODMAN, "rm", "-f", name], capture_output=True)


# --- the registry ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """The distribution registry (tests/cluster/registry/build.sh) on a loopback port."""
    binary = subprocess.run(
        [str(REPO / "tests/cluster/registry/build.sh")], capture_output=True, text=True
    )
    assert binary.returncode == 0, binary.stderr
    port = _free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp_path / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (tmp_path / "registry.log").open("w")
    proc = subprocess.Popen(
        [binary.stdout.strip(), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "registry.log").read_text()
                assert time.monotonic() < deadline, "the registry did not answer in 30 s"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)


@pytest.mark.images
@pytest.mark.timeout(3600)
def test_push_to_the_local_registry(images: dict[str, dict], registry: str) -> None:
    pushed = build.push(registry, ["operator", "pause"])
    assert set(pushed) == {"operator", "pause"}
    for name in ("operator", "pause"):
        path = build.image_path(name)
        assert path == images[name]["ref"]
        assert build.registry_has(registry, path)
        manifest = urllib.request.Request(
            f"http://{registry}/v2/{path.replace(':', '/manifests/')}",
            headers={"Accept": build.MANIFEST_TYPES},
        )
        with urllib.request.urlopen(manifest, timeout=10) as response:
            layers = json.load(response)["layers"]
        assert all(layer["mediaType"].endswith("+zstd") for layer in layers), layers
    # What the registry has is not pushed again (pause:3.10, not a content hash, always is).
    assert set(build.push(registry, ["operator", "pause"])) == {"pause"}
