"""Which node pool a CompressionJob's runner pod goes to.

The contract names no pools: a recipe needs a device class (`recipe_device`: gpu for fp16,
cpu otherwise), each configured pool declares the device it provides, and the configuration's
devicePools maps each class to its default pool.
"""

from __future__ import annotations

from kondense.api.spec import CompressionJobSpec
from kondense.api.steps import DeviceClass, recipe_device, step_info
from kondense.operator.config import OperatorConfig, PoolConfig


class PoolError(ValueError):
    """The job cannot run on any configured pool; `reason` is the status reason."""

    reason = "PoolError"


class UnknownPool(PoolError):
    """spec.nodePool names a pool the operator is not configured with."""

    reason = "UnknownNodePool"


class LocalUriInCluster(PoolError):
    """A file:// or relative URI on a pool without workingDir: the runner pod has no such
    files, so the job would fail only at publish time, after the whole compression ran."""

    reason = "LocalUriInCluster"


class PoolLacksDevice(PoolError):
    """The recipe needs a device the chosen pool does not provide (fp16 on a CPU-only pool),
    or no pool is mapped for that device class."""

    reason = "PoolLacksDevice"


def select_node_pool(spec: CompressionJobSpec, config: OperatorConfig) -> tuple[str, PoolConfig]:
    """(name, settings) of the pool to run on: spec.nodePool when set, else the pool the
    configuration maps the recipe's device class to. PoolError (UnknownPool or
    PoolLacksDevice) when neither can run it."""
    device = recipe_device(spec.steps)
    known = ", ".join(sorted(config.pools))
    if spec.node_pool:
        name = spec.node_pool
        pool = config.pools.get(name)
        if pool is None:
            raise UnknownPool(
                f"spec.nodePool: no node pool {name!r} is configured; use one of {known}"
            )
        if device is DeviceClass.gpu and pool.device is not DeviceClass.gpu:
            raise PoolLacksDevice(
                f"spec.nodePool: {_needs(spec)} needs a GPU; pool {name!r} has none; "
                f"{_gpu_advice(config)}"
            )
        check_cluster_uris(spec, name, pool)
        return name, pool
    name_or_none = config.pool_for(device)
    if name_or_none is None:
        raise PoolLacksDevice(
            f"spec.steps: {_needs(spec)} needs a {device.value.upper()}, and the operator "
            f"configuration maps no pool to {device.value} (devicePools); "
            f"{_gpu_advice(config)}"
        )
    check_cluster_uris(spec, name_or_none, config.pools[name_or_none])
    return name_or_none, config.pools[name_or_none]


def check_cluster_uris(spec: CompressionJobSpec, pool_name: str, pool: PoolConfig) -> None:
    """LocalUriInCluster for the first file:// or relative URI of `spec`, unless `pool` sets
    workingDir (a local cluster whose runners see this machine's files)."""
    if pool.working_dir:
        return
    for field, uri, written in spec.uris():
        if "://" in uri and not uri.startswith("file://"):
            continue
        where = "write the output" if written else "put it"
        raise LocalUriInCluster(
            f"{field}: {uri!r} is a file on this machine, which runner pods of pool "
            f"{pool_name!r} cannot see; {where} in object storage (s3://bucket/key) or a "
            "PersistentVolumeClaim (pvc://claim/path)"
        )


def _needs(spec: CompressionJobSpec) -> str:
    """The steps that need a GPU, by their recipe labels, for messages."""
    labels = [
        step_info(step).label(step.config)
        for step in spec.steps
        if step_info(step).device(step.config) is DeviceClass.gpu
    ]
    return ", ".join(dict.fromkeys(labels)) or "this recipe"


def _gpu_advice(config: OperatorConfig) -> str:
    gpu_pools = sorted(n for n, p in config.pools.items() if p.device is DeviceClass.gpu)
    if gpu_pools:
        return (
            f"remove spec.nodePool or set it to a GPU pool ({', '.join(gpu_pools)}), "
            "or quantize with mode: dynamic"
        )
    return "this operator has no GPU pool; quantize with mode: dynamic"
