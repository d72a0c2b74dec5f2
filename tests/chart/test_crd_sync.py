"""The chart's CRD is the checked-in CRD, byte for byte (`make chart-sync-crd` copies it)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_chart_crd_is_identical_to_top_level_crd() -> None:
    top = REPO / "crds" / "compressionjob.yaml"
    chart = REPO / "charts" / "kondense" / "crds" / "compressionjob.yaml"
    assert top.is_file(), "crds/compressionjob.yaml is missing: generate it with `kondense crd`"
    assert chart.is_file(), "the chart has no CRD: run `make chart-sync-crd`"
    assert chart.read_bytes() == top.read_bytes(), (
        "charts/kondense/crds/compressionjob.yaml differs from crds/: run `make chart-sync-crd`"
    )


def test_chart_installs_no_other_crd() -> None:
    names = sorted(p.name for p in (REPO / "charts" / "kondense" / "crds").iterdir())
    assert names == ["compressionjob.yaml"]
