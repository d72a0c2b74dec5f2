"""The operator image has no torch, onnx, onnxruntime or numpy, and no runner code: importing
every module of the operator and of the shared contract must not need them."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import kondense.api
import kondense.operator

HEAVY = ("torch", "onnx", "onnxruntime", "transformers", "numpy")


def modules(package: object) -> list[str]:
    path = package.__path__  # type: ignore[attr-defined]
    prefix = package.__name__ + "."  # type: ignore[attr-defined]
    return sorted(info.name for info in pkgutil.walk_packages(path, prefix))


def test_operator_and_api_import_no_heavy_packages_and_no_runner_code() -> None:
    names = modules(kondense.operator) + modules(kondense.api)
    assert "kondense.operator.main" in names and "kondense.api.steps" in names
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{HEAVY!r} or m == 'kondense.runners' or m.startswith('kondense.runners.'))\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == ""
