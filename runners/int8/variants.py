"""Dynamic INT8 variants, and which one suits the CPU the job runs on.

ONNX Runtime's integer GEMM multiplies u8 activations by the weights. On AVX2-only CPUs the
u8 x s8 kernel (`vpmaddubsw`) adds each pair of products into a 16-bit sum that saturates
at 32767 (255·127·2 = 64770 does not fit), which cost MiniLM about 0.004 cosine; VNNI, AMX
and Arm's dot product accumulate in 32 bits. Two variants avoid the saturation:
`reduce_range` (7-bit weights, so 255·63·2 fits) and U8 weights (the u8 x u8 kernel widens to
16 bits before multiplying). Whether this CPU saturates is measured by `u8s8_saturates`, and
the candidates for it are then measured on tuning data by the quantize step, never assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The probe: one row of u8 255s times a column of s8 127s, K deep. Exact: K·255·127.
PROBE_DEPTH = 64
# A variant that meets this cosine on tuning data is good enough; the fastest such is chosen.
TUNE_COSINE_TARGET = 0.99
# Latencies within this factor of the fastest are a tie, won by the more accurate variant:
# the same kernel measured twice on a loaded two-core machine differed by up to 12%.
LATENCY_TIE = 1.05


@dataclass(frozen=True)
class Variant:
    """One way to run ORT's quantize_dynamic: signed or unsigned weights, full or 7-bit range."""

    name: str
    signed_weights: bool = True
    reduce_range: bool = False

    def weight_type(self) -> Any:
        from onnxruntime.quantization import QuantType

        return QuantType.QInt8 if self.signed_weights else QuantType.QUInt8


S8 = Variant("s8")
S8_REDUCED = Variant("s8-reduce-range", reduce_range=True)
U8 = Variant("u8u8", signed_weights=False)


@dataclass(frozen=True)
class Probe:
    """What the CPU's u8 x s8 integer MatMul returned for the probe, against the exact sum."""

    got: int
    exact: int

    @property
    def saturates(self) -> bool:
        return self.got != self.exact

    def describe(self) -> str:
        verdict = "saturates" if self.saturates else "exact"
        return f"u8s8 MatMulInteger probe {verdict} ({self.got} for {self.exact})"


def u8s8_probe(depth: int = PROBE_DEPTH) -> Probe:
    """Run a u8 x s8 MatMulInteger whose pair sums overflow 16 bits on this CPU's kernels."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = np.full((depth, 8), 127, np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "u8s8_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, depth])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 8])],
        initializer=[numpy_helper.from_array(weight, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    result = session.run(None, {"a": np.full((4, depth), 255, np.uint8)})[0]
    return Probe(got=int(result.min()), exact=depth * 255 * 127)


def candidates(saturates: bool) -> list[Variant]:
    """The variants worth measuring: S8 alone where u8s8 sums are exact (the others only lose
    a bit of weight precision, or speed), all three where they saturate."""
    return [S8, S8_REDUCED, U8] if saturates else [S8]


@dataclass(frozen=True)
class Trial:
    """A variant's figures on the tuning data: output cosine to float, latency median."""

    variant: Variant
    cosine: float
    latency_ms: float | None = None

    def describe(self) -> str:
        speed = "" if self.latency_ms is None else f", {self.latency_ms:.1f} ms"
        return f"{self.variant.name} cosine {self.cosine:.4f}{speed}"


def choose(trials: Sequence[Trial], target: float = TUNE_COSINE_TARGET) -> Trial:
    """The fastest trial meeting `target`, the most accurate of those within LATENCY_TIE of
    it; when none meets it, the most accurate (sensitivity measurement then keeps its worst
    ops in float). Trials without a latency count as slow."""
    meeting = [t for t in trials if t.cosine >= target]
    if not meeting:
        return max(trials, key=lambda t: t.cosine)
    timed = [t.latency_ms for t in meeting if t.latency_ms is not None]
    if not timed:
        return max(meeting, key=lambda t: t.cosine)
    fast = [
        t for t in meeting if t.latency_ms is not None and t.latency_ms <= min(timed) * LATENCY_TIE
    ]
    return max(fast, key=lambda t: t.cosine)
