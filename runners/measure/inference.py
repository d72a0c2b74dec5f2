"""ONNX Runtime sessions with explicit, reported settings: device, provider and thread count."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kondense.api.errors import BadInput
from kondense.runners.io.data import Batch

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Whole CPUs a cgroup CPU quota allows (v2 cpu.max or v1 cfs quota), None when unlimited.

    A container's `resources.limits.cpu` shows up here, not in the affinity mask.
    """
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, limit) if limit else cpus)


def resolve_threads(requested: int) -> int:
    """The intra-op thread count to use: `requested`, or the available CPUs for 0."""
    return requested if requested > 0 else available_cpus()


@dataclass(frozen=True)
class Device:
    """Where sessions run: `name` is cpu or cuda, `provider` the execution provider."""

    name: str
    provider: str

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"


def pick_device(prefer_gpu: bool = True) -> Device:
    """CUDA when ONNX Runtime has it and a GPU is wanted, the CPU otherwise."""
    import onnxruntime as ort

    if prefer_gpu and CUDA in ort.get_available_providers():
        return Device("cuda", CUDA)
    return Device("cpu", CPU)


def open_session(path: Path, *, threads: int, device: Device) -> Any:
    """An InferenceSession with fixed threads and sequential execution (stable timings)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = [device.provider] if device.provider == CPU else [device.provider, CPU]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:
        raise BadInput(f"ONNX Runtime cannot load {path.name}: {error}") from error


def feed(session: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`inputs` cast to the element types the session declares, limited to its inputs."""
    declared = {i.name: i.type for i in session.get_inputs()}
    missing = sorted(set(declared) - set(inputs))
    if missing:
        raise BadInput(
            f"the model needs inputs {sorted(declared)} but the data gives {sorted(inputs)} "
            f"(missing {missing})"
        )
    return {
        name: np.asarray(inputs[name], dtype=_ORT_TO_NUMPY.get(kind, inputs[name].dtype))
        for name, kind in declared.items()
    }


def run_batches(session: Any, batches: Iterable[Batch]) -> Iterator[tuple[Batch, np.ndarray]]:
    """Each batch with the model's first output (as float32 for float outputs)."""
    output = session.get_outputs()[0].name
    for batch in batches:
        try:
            (result,) = session.run([output], feed(session, batch.inputs))
        except BadInput:
            raise
        except Exception as error:
            shapes = {name: list(a.shape) for name, a in batch.inputs.items()}
            raise BadInput(f"the model failed on inputs of shapes {shapes}: {error}") from error
        if result.dtype.kind == "f":
            result = result.astype(np.float32)
        yield batch, result
