"""The chart's Grafana dashboard: a ConfigMap the Grafana sidecar loads (its label), holding
dashboards/kondense.json, whose queries are PromQL a real Prometheus accepts, over the
operator's own metrics. (That they return series from a real operator is
tests/operator/test_prometheus.py's part.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures import prometheus
from fixtures.helm import CHART, by_kind, helm, render
from prometheus_client import generate_latest

from kondense.operator.metrics import REGISTRY

DASHBOARD = prometheus.DASHBOARD


def test_dashboard_is_off_by_default(helm_bin: Path) -> None:
    assert not [
        c for c in by_kind(render(helm_bin), "ConfigMap") if "dashboard" in c["metadata"]["name"]
    ]


def test_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard(helm_bin: Path) -> None:
    objects = render(
        helm_bin,
        "--set", "metrics.grafanaDashboard.enabled=true",
        "--set", "metrics.grafanaDashboard.namespace=monitoring",
        "--set", "metrics.grafanaDashboard.annotations.grafana_folder=Kondense",
    )  # fmt: skip
    (config_map,) = [
        c for c in by_kind(objects, "ConfigMap") if "dashboard" in c["metadata"]["name"]
    ]
    meta = config_map["metadata"]
    assert meta["labels"]["grafana_dashboard"] == "1"
    assert meta["namespace"] == "monitoring"
    assert meta["annotations"] == {"grafana_folder": "Kondense"}
    assert json.loads(config_map["data"]["kondense.json"]) == json.loads(DASHBOARD.read_text())


def test_chart_with_rules_and_dashboard_lints_strictly(helm_bin: Path) -> None:
    done = helm(
        helm_bin, "lint", "--strict", str(CHART),
        "--set", "metrics.grafanaDashboard.enabled=true",
        "--set", "metrics.prometheusRule.enabled=true",
        "--set", "metrics.serviceMonitor.enabled=true",
    )  # fmt: skip
    assert "0 chart(s) failed" in done.stdout


def test_dashboard_queries_only_metrics_the_operator_serves() -> None:
    served = {
        sample
        for line in generate_latest(REGISTRY).decode().splitlines()
        if line.startswith("# TYPE ")
        for sample in _sample_names(line.split()[2], line.split()[3])
    }
    queries = prometheus.dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 12
    for title, expr in queries:
        used = set(re.findall(r"\bkondense_[a-z_]+", expr))
        assert used and used <= served, f"{title}: {used - served} not served"


def _sample_names(family: str, kind: str) -> list[str]:
    if kind == "histogram":
        return [f"{family}_bucket", f"{family}_sum", f"{family}_count"]
    return [family]


@pytest.fixture(scope="module")
def empty_prometheus() -> Iterator[prometheus.Prometheus]:
    prometheus.install()
    server = prometheus.Prometheus(targets=[])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_every_dashboard_query_parses_in_prometheus(
    empty_prometheus: prometheus.Prometheus,
) -> None:
    refused = []
    for title, expr in prometheus.dashboard_queries(json.loads(DASHBOARD.read_text())):
        try:
            empty_prometheus.query(expr)
        except AssertionError as error:  # Prometheus answered 400 bad_data
            refused.append(f"{title}: {error}")
    assert refused == []
    with pytest.raises(AssertionError, match="bad_data"):
        empty_prometheus.query("sum by (phase (kondense_compressionjobs)")
