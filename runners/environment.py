"""The environment a report was made in: Python, the library versions and the CPU.

INT8 figures depend on ONNX Runtime's kernels and the CPU's instructions, so report.json
records both; nothing is imported to find a version (package metadata only).
"""

from __future__ import annotations

import platform
from importlib import metadata

from kondense.api.outcome import Environment
from kondense.runners.measure.cpu import cpu_info

# The distributions whose versions change what a job measures.
PACKAGES = ("kondense", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "transformers")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of `names`; those not installed are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe_environment() -> Environment:
    return Environment(
        python=platform.python_version(), packages=package_versions(), cpu=cpu_info()
    )
