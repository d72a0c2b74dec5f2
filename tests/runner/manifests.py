"""Writing CompressionJob manifests for runner tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def manifest(
    model_uri: str | Path,
    steps: list[dict[str, Any]],
    output: str | Path,
    *,
    task: str = "generic",
    data: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A CompressionJob with quick benchmark settings (few runs) unless told otherwise."""
    return {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "test"},
        "spec": {
            "model": {"uri": str(model_uri), "task": task},
            **({"data": data} if data else {}),
            "steps": steps,
            "evaluation": {"warmup": 2, "runs": 20, "threads": 1, **(evaluation or {})},
            "output": {"uri": str(output)},
            **spec,
        },
    }


def write_manifest(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
