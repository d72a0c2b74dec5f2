"""The chart's Argo CD health check (charts/kondense/argocd/), run by Argo CD's own machinery
(argocd/main.go): argocd-cm read by its settings manager, the Lua by its util/lua VM."""

from __future__ import annotations

from pathlib import Path

import yaml
from fixtures.gitops import ARGOCD, ARGOCD_CM, argocd_health
from gitops.health_testdata import HEALTH_KEY, cases, files

from kondense.api.crd import PHASES


def test_testdata_is_what_the_operators_status_functions_make() -> None:
    expected = files()
    stale = [str(p) for p, text in expected.items() if not p.is_file() or p.read_text() != text]
    extra = sorted(set((ARGOCD / "testdata").glob("*.yaml")) - set(expected))
    rerun = "run .venv/bin/python tests/gitops/health_testdata.py"
    assert not stale and not extra, f"stale {stale}, not generated {extra}: {rerun}"


def test_testdata_covers_every_phase_and_stalled() -> None:
    statuses = [cj["status"] for _, cj, _ in cases() if (cj.get("status") or {}).get("phase")]
    assert {s["phase"] for s in statuses} == set(PHASES)
    stalled = {
        s["phase"]
        for s in statuses
        for c in s["conditions"]
        if c["type"] == "Stalled" and c["status"] == "True"
    }
    assert stalled == {"Pending", "Failed"}


def test_argocd_cm_carries_health_lua_under_the_key_argo_cd_reads() -> None:
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    assert cm["metadata"] == {"name": "argocd-cm"}
    assert cm["data"] == {HEALTH_KEY: (ARGOCD / "health.lua").read_text()}
    assert HEALTH_KEY == "resource.customizations.health.kondense.dev_CompressionJob"


def test_argo_cd_gives_each_test_object_the_health_of_health_test_yaml(
    argocd_health_bin: Path,
) -> None:
    tests = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
    results = argocd_health(argocd_health_bin)
    assert [r["inputPath"] for r in results] == [t["inputPath"] for t in tests]
    wrong = [
        (t["inputPath"], r.get("healthStatus") or r.get("error"), t["healthStatus"])
        for t, r in zip(tests, results, strict=True)
        if r.get("healthStatus") != t["healthStatus"]
    ]
    assert not wrong, "\n".join(f"{p}: got {got}, want {want}" for p, got, want in wrong)
    assert {t["healthStatus"]["status"] for t in tests} == {"Progressing", "Healthy", "Degraded"}
