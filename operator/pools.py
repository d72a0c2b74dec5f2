"""Which node pool a CompressionJob's runner pod goes to."""

from __future__ import annotations

from typing import Any

from kondense.operator.config import OperatorConfig, PoolConfig

GPU_POOL = "gpu"
CPU_POOL = "cpu"


class UnknownPool(ValueError):
    """spec.nodePool names a pool the operator is not configured with."""


def recipe_pool(spec: dict[str, Any]) -> str:
    """The pool the recipe needs: gpu when any step quantizes to fp16, cpu otherwise."""
    for step in spec.get("steps") or []:
        quantize = step.get("quantize") if isinstance(step, dict) else None
        if isinstance(quantize, dict) and quantize.get("mode") == "fp16":
            return GPU_POOL
    return CPU_POOL


def select_node_pool(spec: dict[str, Any], config: OperatorConfig) -> tuple[str, PoolConfig]:
    """(name, settings) of the pool to run on: spec.nodePool when set, else from the recipe."""
    name = spec.get("nodePool") or recipe_pool(spec)
    pool = config.pools.get(name)
    if pool is None:
        known = ", ".join(sorted(config.pools))
        raise UnknownPool(f"spec.nodePool: no node pool {name!r} is configured; use one of {known}")
    return name, pool
