"""Chart tests: the Helm binary, built once per session from tests/chart/go."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.helm import build_helm


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return build_helm()
