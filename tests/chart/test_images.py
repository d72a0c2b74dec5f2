"""The Dockerfiles install the right extras, as non-root, from pinned bases; the operator
image's dependency set has no torch or onnxruntime. (tests/images builds and runs them.)"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
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
def test_image_installs_its_pyproject_extra(image: str, extra: str) -> None:
    text = _dockerfile(image)
    # `pip install ".[extra]"`, or (runner-cpu: dependencies in a layer of their own, before the
    # package is copied) the requirements read from pyproject's optional-dependencies[extra].
    installs = re.findall(r"pip install [^\n]*?\"\.\[([\w,-]+)\]\"", text)
    installs += re.findall(r"\[\"optional-dependencies\"\]\[\"([\w-]+)\"\]", text)
    assert installs == [extra], f'{image}.Dockerfile should pip install ".[{extra}]"'


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
    assert "pip uninstall -y onnxruntime" in text


def _closure(requirements: list[str], extras: set[str]) -> set[str]:
    """Names of the distributions the requirements pull in, resolved through the installed
    metadata (the venv has every extra installed, so each dependency's own deps are known)."""
    seen: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, active = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in active | {""}):
            continue
        name = canonicalize_name(req.name)
        if name == "kondense":
            todo += [(Requirement(r), set(req.extras)) for r in _kondense_requires(req.extras)]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            deps = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [(Requirement(d), set(req.extras)) for d in deps]
    return seen


def _kondense_requires(extras: set[str]) -> list[str]:
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return reqs


def test_operator_dependency_set_excludes_torch_and_onnxruntime() -> None:
    deps = _closure(_kondense_requires({"operator"}), set())
    assert {"kopf", "kubernetes", "pydantic"} <= deps  # the resolution really walked the tree
    assert not deps & HEAVY, f"the operator image would install {sorted(deps & HEAVY)}"


def test_runner_dependency_set_has_torch_and_onnxruntime() -> None:
    # The same resolution finds the heavy packages where they belong, so the test above can fail.
    deps = _closure(_kondense_requires({"runner"}), set())
    assert {"torch", "onnxruntime"} <= deps
