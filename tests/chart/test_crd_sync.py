"""The chart's CRDs (CompressionJob, CompressionSearch): the checked-in CRDs byte for byte
(`make chart-sync-crd` copies them into files/crds/), rendered by templates/crds/ so that
`helm upgrade` updates them (crds.enabled), and annotated to survive `helm uninstall`
(crds.keep)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fixtures.helm import by_kind, render

REPO = Path(__file__).resolve().parents[2]
FILES = ["compressionjob.yaml", "compressionsearch.yaml"]
TOP = REPO / "crds" / "compressionjob.yaml"
CRD = "templates/crds/compressionjob.yaml"


@pytest.mark.parametrize("name", FILES)
def test_chart_crd_is_identical_to_top_level_crd(name: str) -> None:
    top = REPO / "crds" / name
    chart_copy = REPO / "charts" / "kondense" / "files" / "crds" / name
    assert top.is_file(), f"crds/{name} is missing: generate it with `make crd`"
    assert chart_copy.is_file(), "the chart lacks this CRD: run `make chart-sync-crd`"
    assert chart_copy.read_bytes() == top.read_bytes(), (
        f"the chart's files/crds/{name} differs from crds/: run `make chart-sync-crd`"
    )


def test_chart_has_no_crds_folder() -> None:
    # Helm would install crds/ once and never upgrade it, and a second copy of the same CRD
    # there would collide with the template's on install.
    assert not (REPO / "charts" / "kondense" / "crds").exists()


def test_rendered_crds_are_the_generated_crds_with_release_labels(helm_bin: Path) -> None:
    rendered = by_kind(render(helm_bin, release="kd"), "CustomResourceDefinition")
    assert [crd["spec"]["names"]["kind"] for crd in rendered] == [
        "CompressionJob",
        "CompressionSearch",
    ]
    for crd, name in zip(rendered, FILES, strict=True):
        generated = yaml.safe_load((REPO / "crds" / name).read_text())
        assert crd["apiVersion"] == generated["apiVersion"]
        assert crd["metadata"]["name"] == generated["metadata"]["name"]
        assert crd["spec"] == generated["spec"]
        labels = crd["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "kd"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_crd_is_kept_on_uninstall_by_default(helm_bin: Path) -> None:
    (crd,) = by_kind(render(helm_bin, "--show-only", CRD), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_crds_keep_false_drops_the_keep_annotation(helm_bin: Path) -> None:
    objects = render(helm_bin, "--set", "crds.keep=false", "--show-only", CRD)
    (crd,) = by_kind(objects, "CustomResourceDefinition")
    assert "annotations" not in crd["metadata"]
    assert crd["spec"] == yaml.safe_load(TOP.read_text())["spec"]


def test_crds_enabled_false_renders_no_crd_and_the_rest(helm_bin: Path) -> None:
    objects = render(helm_bin, "--set", "crds.enabled=false")
    assert not by_kind(objects, "CustomResourceDefinition")
    assert by_kind(objects, "Deployment")


def test_crd_is_rendered_and_kept_when_the_values_have_no_crds_key(helm_bin: Path) -> None:
    # `helm upgrade --reuse-values` of a release made by a chart without `crds` keeps that
    # chart's defaults, so .Values.crds is missing: both settings then mean true.
    objects = render(helm_bin, "--set", "crds=null", "--show-only", CRD)
    (crd,) = by_kind(objects, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
