"""The `images` marker: tests that build the project's images with podman (make images)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "images: builds the project's images with podman (the first time: many minutes)",
    )
