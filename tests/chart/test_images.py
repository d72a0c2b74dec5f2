"""The Dockerfiles install the right extras at the versions uv.lock pins, as non-root, from
pinned bases; the operator image's dependency set has no torch or onnxruntime; the lock matches
pyproject.toml. (tests/images builds and runs them.)"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
# Which pyproject extra each image is built from.
IMAGE_EXTRAS = {"operator": "operator", "runner-cpu": "runner", "runner-gpu": "runner-gpu"}
HEAVY = {"torch", "onnxruntime", "onnxruntime-gpu", "onnx", "transformers", "nvidia-cudnn-cu12"}


def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dockerfile(image: str) -> str:
    # Join continuation lines so one RUN is one line.
    return (IMAGES / f"{image}.Dockerfile").read_text().replace("\\\n", " ")


def _base_images(text: str) -> list[str]:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    stages = set(re.findall(r"^FROM \S+ AS (\w+)", text, re.M))
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], b) for b in bases]
    return [b for b in resolved if b not in stages]


def test_every_extra_an_image_names_exists_in_pyproject() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert set(IMAGE_EXTRAS.values()) <= set(extras)


@pytest.mark.parametrize(("image", "extra"), IMAGE_EXTRAS.items())
def test_image_installs_its_extra_from_the_lock(image: str, extra: str) -> None:
    text = _dockerfile(image)
    # The lock's requirements for the extra, without kondense itself (installed after, or in
    # runner-cpu's case in a layer of its own), installed by uv.
    exports = re.findall(r"uv export --frozen --no-emit-project --extra ([\w-]+)", text)
    assert exports == [extra], f"{image}.Dockerfile should `uv export` the lock's [{extra}]"
    assert "uv pip install --python /opt/kondense/bin/python -r requirements.txt" in text
    assert re.search(r"^COPY [^\n]*\buv\.lock\b", text, re.M), f"{image} does not COPY uv.lock"


@pytest.mark.parametrize("image", IMAGE_EXTRAS)
def test_image_runs_as_a_numeric_non_root_user(image: str) -> None:
    users = re.findall(r"^USER (\S+)$", _dockerfile(image), re.M)
    assert users, f"{image}.Dockerfile has no USER"
    uid = users[-1].split(":")[0]
    # Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0


@pytest.mark.parametrize("image", IMAGE_EXTRAS)
def test_image_base_is_pinned(image: str) -> None:
    for base in _base_images(_dockerfile(image)):
        name, _, tag = base.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest", f"{base} is not pinned to a tag"
        # A full version (x.y.z), not a moving one like 3.12-slim.
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{base}: pin an exact version tag"


def test_gpu_runner_uses_cuda_base_and_onnxruntime_gpu() -> None:
    text = _dockerfile("runner-gpu")
    assert all(b.startswith("nvidia/cuda:") for b in _base_images(text))
    assert "onnxruntime-gpu" in _pyproject()["project"]["optional-dependencies"]["runner-gpu"][1]
    # The CPU build of onnxruntime comes with the runner extra and would shadow the GPU one.
    assert "--no-emit-package onnxruntime " in text
    locked = _locked("runner-gpu", "--no-emit-package", "onnxruntime")
    assert "onnxruntime-gpu" in locked and "onnxruntime" not in locked


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    uv = Path(sys.executable).with_name("uv")  # scripts/install-venv.sh puts it in the venv
    return subprocess.run(
        [str(uv), *args, "--offline"], cwd=REPO, capture_output=True, text=True, check=False
    )


def _locked(extra: str, *options: str) -> set[str]:
    """The distributions uv.lock installs for `extra`, exported as the Dockerfiles do."""
    export = _uv(
        "export", "--frozen", "--no-emit-project", "--no-hashes", "--extra", extra, *options
    )
    assert export.returncode == 0, export.stderr
    lines = [line for line in export.stdout.splitlines() if "==" in line and line[0] != " "]
    return {canonicalize_name(line.partition("==")[0]) for line in lines}


def test_the_lock_matches_pyproject() -> None:
    # Fails when a dependency changed in pyproject.toml and `make lock` was not run.
    check = _uv("lock", "--check")
    assert check.returncode == 0, f"uv.lock is stale; run `make lock`:\n{check.stderr}"


def test_operator_dependency_set_excludes_torch_and_onnxruntime() -> None:
    deps = _locked("operator")
    assert {"kopf", "kubernetes", "pydantic", "aiohttp"} <= deps  # kopf's own dependencies too
    assert not deps & HEAVY, f"the operator image would install {sorted(deps & HEAVY)}"


def test_runner_dependency_set_has_torch_and_onnxruntime() -> None:
    # The same resolution finds the heavy packages where they belong, so the test above can fail.
    deps = _locked("runner")
    assert {"torch", "onnxruntime"} <= deps
