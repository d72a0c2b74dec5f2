"""The CPU a job runs on, as far as INT8 depends on it: its integer dot-product instructions.

ONNX Runtime picks its integer GEMM kernels from CPUID at load time, so the same INT8 model
is faster, and sometimes more accurate, on one machine than on another: AVX2-only CPUs
multiply u8 x s8 pairs into 16-bit sums that saturate (`vpmaddubsw`), AVX512-VNNI, AVX-VNNI
and AMX accumulate in 32 bits, Arm's dot-product instructions (`asimddp`) likewise. The
report names the kind, and the quantize step chooses its INT8 variant for it.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

from kondense.api.outcome import CpuInfo

# Flags, as Linux's /proc/cpuinfo spells them, that decide INT8 kernels (x86 and Arm).
INT8_FLAGS = (
    "amx_int8",
    "amx_tile",
    "avx512_vnni",
    "avx512bw",
    "avx512f",
    "avx_vnni",
    "avx2",
    "asimddp",
    "i8mm",
    "sve",
)
# Fastest first: the first kind whose flag the CPU has is its kind.
DOT_PRODUCT_KINDS = (
    ("amx", "amx_int8"),
    ("avx512-vnni", "avx512_vnni"),
    ("avx-vnni", "avx_vnni"),
    ("avx2", "avx2"),
    ("arm-dotprod", "asimddp"),
)
NONE = "none"


def int8_dot_product(flags: Iterable[str]) -> str:
    """The fastest integer dot-product kind in `flags`: amx, avx512-vnni, avx-vnni, avx2,
    arm-dotprod or none. Flags are matched as /proc/cpuinfo writes them (any case;
    `avx512vnni` as some tools write it counts as `avx512_vnni`)."""
    present = {f.lower().replace("avx512vnni", "avx512_vnni") for f in flags}
    for kind, flag in DOT_PRODUCT_KINDS:
        if flag in present:
            return kind
    return NONE


def parse_cpuinfo(text: str) -> tuple[str, list[str]]:
    """The model name and the INT8-relevant flags of the first processor in /proc/cpuinfo."""
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:  # x86 "flags", Arm "Features"
            flags = set(value.split())
    return model, [f for f in INT8_FLAGS if f in flags]


def _darwin_flags() -> list[str]:
    """Apple Silicon: every M-series core has the Arm dot product (FEAT_DotProd)."""
    try:
        answer = subprocess.run(
            ["sysctl", "-n", "hw.optional.arm.FEAT_DotProd"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return []
    return ["asimddp"] if answer.stdout.strip() == "1" else []


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU: model name, integer dot-product kind and INT8-relevant flags.

    Linux (x86 and Arm) reads /proc/cpuinfo; macOS asks sysctl; elsewhere the kind is
    `none` with the processor name Python knows.
    """
    model, flags = "", list[str]()
    try:
        model, flags = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    except OSError:
        if platform.system() == "Darwin":
            flags = _darwin_flags()
    model = model or platform.processor() or platform.machine() or "unknown"
    return CpuInfo(model=model, int8_dot_product=int8_dot_product(flags), flags=flags)
