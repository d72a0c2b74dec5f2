"""The memory a job needs against the memory it has: a job that cannot fit is refused before
any work, naming what it needs and what to raise, instead of being OOM-killed halfway.

The budget is the smaller of the runner's cgroup memory limit (a pod's
`resources.limits.memory`: cgroup v2 memory.max or v1 memory.limit_in_bytes) and the memory
the machine has available (MemAvailable), whichever are known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kondense.api.errors import BadInput
from kondense.api.spec import ModelFormat

GIB = 1 << 30
# ONNX steps peak at 2x the model's bytes at most (`make bench-large`, issue #17): ONNX
# Runtime's quantizer holds the float weights and their INT8 copy, a session holds one copy.
ONNX_PEAK_PER_MODEL_BYTE = 2.0
# Export from torch peaks inside torch's TorchScript exporter: the module, the ModelProto it
# builds, that proto serialized and the Python bytes of it, all at once. `make bench-large`
# measured 5.76 GB exporting a 1.21 GB BERT and 6.42 GB with dynamic INT8 after it (its
# per-op measurement on the exported model, weights inside the file): 4.8x above the runtime.
EXPORT_PEAK_PER_MODEL_BYTE = 5.0
# The runner's own memory before any model: Python, torch, ONNX Runtime (0.6 GB measured).
RUNTIME_BYTES = 768 << 20
# A cgroup v1 "no limit" is the largest page-aligned long; anything this large is no limit.
UNLIMITED = 1 << 60
FIELD = "spec.resources.memory"


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes the process's cgroup may use (v2 memory.max or v1 memory.limit_in_bytes), None
    when unlimited or unknown."""
    for file in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = file.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            limit = int(text)
        except ValueError:
            continue
        return limit if limit < UNLIMITED else None
    return None


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The machine's MemAvailable in bytes, None when unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_per_model_byte(model_format: ModelFormat) -> float:
    if model_format is ModelFormat.onnx:
        return ONNX_PEAK_PER_MODEL_BYTE
    return EXPORT_PEAK_PER_MODEL_BYTE


def estimated_need(model_bytes: int, model_format: ModelFormat) -> int:
    """Peak bytes a job on a model of `model_bytes` is expected to reach."""
    return RUNTIME_BYTES + int(peak_per_model_byte(model_format) * model_bytes)


@dataclass(frozen=True)
class Budget:
    """The memory a job may use: the cgroup limit and the machine's available memory."""

    limit: int | None
    available: int | None

    @classmethod
    def here(cls) -> Budget:
        return cls(limit=cgroup_memory_limit(), available=available_memory())

    def check(self, model_bytes: int, model_format: ModelFormat) -> None:
        """Raise BadInput (field spec.resources.memory) when the job would not fit."""
        need = estimated_need(model_bytes, model_format)
        why = (
            f"a {_gib(model_bytes)} {model_format.value} model needs about {_gib(need)} of "
            f"memory ({_gib(RUNTIME_BYTES)} for the runner, "
            f"{peak_per_model_byte(model_format):g}x the model's bytes for its steps)"
        )
        if (
            self.limit is not None
            and need > self.limit
            and (self.available is None or self.limit <= self.available)
        ):
            raise BadInput(
                f"{why}, but the runner's memory limit is {_gib(self.limit)}; raise "
                f"{FIELD} to at least {_quantity(need)}",
                field=FIELD,
            )
        if self.available is not None and need > self.available:
            raise BadInput(
                f"{why}, but this machine has {_gib(self.available)} available; free memory or "
                f"run it where {_quantity(need)} is available (on a cluster: {FIELD})",
                field=FIELD,
            )


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def _quantity(size: int) -> str:
    """`size` rounded up to a whole Kubernetes quantity in Gi."""
    return f"{-(-size // GIB)}Gi"


def release_freed_memory() -> None:
    """Hand freed heap memory back to the system. glibc keeps freed heap pages for reuse:
    after torch's exporter that was over a gigabyte on a 1.2 GB model, resident through every
    later step, and a closed session's pages sat beneath the next one's. A no-op where the C
    library has no malloc_trim."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
