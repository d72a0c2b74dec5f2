"""GitOps tests: Argo CD's health machinery and kstatus, each built once from its Go module
(argocd/, kstatus/); live objects come from the operator of tests/fixtures/operator_cluster.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def build(tool: str) -> Path:
    """Build tests/gitops/<tool> (cached under ~/.cache/kondense) and return the binary."""
    done = subprocess.run(
        [str(HERE / tool / "build.sh")], capture_output=True, text=True, timeout=2400
    )
    if done.returncode != 0:
        raise RuntimeError(f"building {tool} failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def argocd_health_bin() -> Path:
    return build("argocd")


@pytest.fixture(scope="session")
def kstatus_bin() -> Path:
    return build("kstatus")
