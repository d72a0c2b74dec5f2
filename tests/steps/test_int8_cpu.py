"""INT8 that suits the CPU: its dot-product kind, the u8s8 saturation probe, the variant choice."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fixtures.models import build_tiny_onnx, minimal_spec, step_context

from kondense.api.spec import ModelFormat
from kondense.runners.core import Model
from kondense.runners.int8 import variants
from kondense.runners.int8.variants import S8, S8_REDUCED, U8, Probe, Trial, choose
from kondense.runners.measure.cpu import cpu_info, int8_dot_product, parse_cpuinfo
from kondense.runners.steps import load_step

SAPPHIRE_RAPIDS = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx_vnni amx_tile amx_int8"
ICE_LAKE = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni"
ALDER_LAKE = "fpu sse2 avx avx2 fma avx_vnni"
HASWELL = "fpu sse2 avx avx2 fma"
NEOVERSE_N1 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp"
OLD_X86 = "fpu sse2 sse4_2 avx"


@pytest.mark.parametrize(
    ("flags", "kind"),
    [
        (SAPPHIRE_RAPIDS, "amx"),
        (ICE_LAKE, "avx512-vnni"),
        (ALDER_LAKE, "avx-vnni"),
        (HASWELL, "avx2"),
        (NEOVERSE_N1, "arm-dotprod"),
        (OLD_X86, "none"),
        ("", "none"),
        ("AVX2 AVX512VNNI", "avx512-vnni"),  # other tools' spelling and case
    ],
)
def test_int8_dot_product_names_the_fastest_kind_the_flags_offer(flags: str, kind: str) -> None:
    assert int8_dot_product(flags.split()) == kind


def test_cpuinfo_of_an_x86_and_an_arm_machine_is_read() -> None:
    x86 = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338\n"
        f"flags\t\t: {ICE_LAKE}\n\nprocessor\t: 1\nmodel name\t: ignored\n"
    )
    assert parse_cpuinfo(x86) == (
        "Intel(R) Xeon(R) Gold 6338",
        ["avx512_vnni", "avx512bw", "avx512f", "avx2"],
    )
    arm = f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {NEOVERSE_N1}\nCPU part\t: 0xd0c\n"
    assert parse_cpuinfo(arm) == ("", ["asimddp"])


def test_cpu_info_reports_kind_and_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"model name\t: Haswell\nflags\t\t: {HASWELL}\n")
    info = cpu_info(cpuinfo)
    assert (info.model, info.int8_dot_product, info.flags) == ("Haswell", "avx2", ["avx2"])
    this_machine = cpu_info()
    assert this_machine.int8_dot_product == int8_dot_product(this_machine.flags)


def test_u8s8_probe_matches_what_the_cpu_kind_promises() -> None:
    probe = variants.u8s8_probe()
    assert probe.exact == variants.PROBE_DEPTH * 255 * 127
    kind = cpu_info().int8_dot_product
    # VNNI and AMX accumulate u8 x s8 products in 32 bits; AVX2's vpmaddubsw saturates at
    # 16 bits (measured under QEMU's Haswell: 1048544 = 32 x 32767 for 2072640).
    if kind in ("amx", "avx512-vnni"):
        assert not probe.saturates
    elif kind == "avx2":
        assert probe.saturates and probe.got == variants.PROBE_DEPTH // 2 * 32767


def test_where_u8s8_saturates_every_variant_is_a_candidate() -> None:
    assert variants.candidates(saturates=False) == [S8]
    assert variants.candidates(saturates=True) == [S8, S8_REDUCED, U8]


def test_the_fastest_variant_meeting_the_target_is_chosen() -> None:
    trials = [Trial(S8, 0.988, 10.0), Trial(S8_REDUCED, 0.991, 10.5), Trial(U8, 0.993, 14.0)]
    assert choose(trials).variant == S8_REDUCED
    assert choose([Trial(S8, 0.995, 10.0), Trial(U8, 0.999, 14.0)]).variant == S8
    # Within 5% is a tie (timing noise): the more accurate wins.
    assert choose([Trial(S8, 0.995, 10.0), Trial(S8_REDUCED, 0.996, 10.4)]).variant == S8_REDUCED
    # None meets it: the most accurate, whose worst ops sensitivity may then keep float.
    assert choose([Trial(S8, 0.95, 10.0), Trial(U8, 0.97, 14.0)]).variant == U8


def _quantize_tiny(tmp_path: Path, config: dict[str, Any]) -> tuple[Model, dict[str, Any]]:
    source = build_tiny_onnx(tmp_path / "wide.onnx", hidden=256)
    steps = [{"quantize": {"mode": "dynamic", **config}}]
    reports: dict[str, Any] = {}
    step_config = minimal_spec(tmp_path / "work", steps=steps).steps[0].config
    ctx = step_context(tmp_path / "work", reports.__setitem__, steps=steps)
    result = load_step("quantize")(Model(path=source, format=ModelFormat.onnx), step_config, ctx)
    return result, reports


def test_dynamic_int8_notes_the_cpu_and_the_variant_with_its_figures(tmp_path: Path) -> None:
    result, reports = _quantize_tiny(tmp_path, {})
    assert result.path.exists()
    assert reports["cpuInt8"] == cpu_info().int8_dot_product
    assert reports["int8Variant"] in ("s8", "s8-reduce-range", "u8u8")
    assert "u8s8 MatMulInteger probe" in reports["int8Reason"]
    assert "tuning samples (synthetic)" in reports["int8Reason"]
    assert re.search(rf"{reports['int8Variant']} cosine [01]\.\d{{4}}", reports["int8Reason"])
    assert "keptFloat" in reports and "int8OpErrors" in reports


def test_where_the_probe_saturates_each_variant_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(variants, "u8s8_probe", lambda: Probe(got=1048544, exact=2072640))
    _, reports = _quantize_tiny(tmp_path, {})
    reason = reports["int8Reason"]
    assert "probe saturates (1048544 for 2072640)" in reason
    for name in ("s8", "s8-reduce-range", "u8u8"):
        assert re.search(rf"(: |; ){name} cosine [01]\.\d{{4}}, \d+\.\d ms", reason)
    assert reports["int8Variant"] in ("s8", "s8-reduce-range", "u8u8")
    assert list(tmp_path.joinpath("work").glob("int8-*.onnx")) == []  # the losers are gone


def test_keep_float_zero_skips_the_measurements(tmp_path: Path) -> None:
    result, reports = _quantize_tiny(tmp_path, {"keepFloat": 0})
    assert result.path.exists()
    assert "nothing measured" in reports["int8Reason"]
    assert "keptFloat" not in reports
