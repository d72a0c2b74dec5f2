"""A real Prometheus (Debian's package) scrapes the operator's metrics port every second, with
the chart's alert rules loaded: the operator's series arrive, every query of the chart's Grafana
dashboard returns series, the rules evaluate cleanly, and a stalled job is a pending alert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures import prometheus
from fixtures.cluster import Cluster
from fixtures.helm import build_helm, by_kind, render
from fixtures.models import build_tiny_onnx
from fixtures.operator_cluster import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    compression_job,
    phase_is,
    wait_cj,
)

pytestmark = pytest.mark.cluster

RUN_S = 300  # apply -> a tiny recipe's terminal status, runner pod start included


@pytest.fixture
def scraper(operator: Operator) -> Iterator[prometheus.Prometheus]:
    """Prometheus scraping the operator, with the chart's PrometheusRule groups as rule file."""
    prometheus.install()
    objects = render(build_helm(), "--set", "metrics.prometheusRule.enabled=true")
    (rule,) = by_kind(objects, "PrometheusRule")
    server = prometheus.Prometheus(
        targets=[f"127.0.0.1:{operator.metrics_port}"], rules=prometheus.rule_groups(rule)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.workdir.exists()


def spec(model: str, out: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": {"uri": model, "format": "onnx", "inputs": [{"name": "x", "shape": [1, 16]}]},
        "steps": [{"quantize": {"mode": "dynamic"}}],
        "evaluation": {"requireSpeedup": False, "maxMetricDrop": 1.0, "warmup": 2, "runs": 20},
        "output": {"uri": out},
        **extra,
    }


def test_prometheus_scrapes_the_operator_and_the_dashboard_and_rules_work_on_its_series(
    cluster: Cluster, operator: Operator, kop_namespace: str, bucket: str,
    scraper: prometheus.Prometheus, tmp_path: Path,
) -> None:  # fmt: skip
    from kubernetes import client

    # The operator's metric names, from a real scrape of its port, follow the conventions.
    code, said = prometheus.promtool("check", "metrics", stdin=operator.metrics())
    assert code == 0 and said.strip() == "", said

    model = cluster.put_s3(build_tiny_onnx(tmp_path / "tiny.onnx"), bucket, "models/tiny.onnx")
    api = client.CustomObjectsApi(cluster.api_client)
    jobs = {
        "tiny": spec(model, f"s3://{bucket}/out-tiny"),  # runs and succeeds
        "stuck": spec(model, f"s3://{bucket}/out-stuck", nodePool="nowhere"),  # Unschedulable
        "lost": spec(model, f"s3://{bucket}/out-lost", nodePool="no-such-pool"),  # Failed at once
    }
    for name, body in jobs.items():
        api.create_namespaced_custom_object(
            GROUP, VERSION, kop_namespace, PLURAL, compression_job(name, **body)
        )

    found = scraper.wait_for("kondense_compressionjobs")
    assert {series["metric"]["__name__"] for series in found} == {"kondense_compressionjobs"}
    assert all(series["metric"]["job"] == "kondense" for series in found)
    ns = f'namespace="{kop_namespace}"'
    stalled = scraper.wait_for(f'kondense_compressionjob_stalled{{{ns},name="stuck"}} == 1', 120)
    assert stalled[0]["metric"]["reason"] == "Unschedulable"
    scraper.wait_for('kondense_compressionjobs_finished_total{reason="UnknownNodePool"} >= 1')

    body = wait_cj(cluster, kop_namespace, "tiny", phase_is("Succeeded", "Failed"), RUN_S)
    assert body["status"]["phase"] == "Succeeded", f"{body['status']}\n{operator.log()}"
    ratio = scraper.wait_for(f'kondense_compressionjob_size_ratio{{{ns},name="tiny"}}')
    assert float(ratio[0]["value"][1]) == pytest.approx(body["status"]["results"]["sizeRatio"])
    scraper.wait_for('kondense_compressionjob_duration_seconds_count{phase="Succeeded"} >= 1')

    # Every query of the dashboard returns series (each panel shows something).
    dashboard = json.loads(prometheus.DASHBOARD.read_text())
    empty = [
        f"{title}: {expr}"
        for title, expr in prometheus.dashboard_queries(dashboard)
        if not scraper.query(expr)
    ]
    assert empty == []

    # The chart's rules evaluate on these series without error; the stalled job is a pending
    # alert (it fires after stalledFor, 15 minutes by default).
    scraper.wait_for(
        f'ALERTS{{alertname="KondenseCompressionJobStalled",alertstate="pending",{ns},name="stuck"}}'
    )
    groups = scraper.api("rules")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == {
        "KondenseCompressionJobStalled",
        "KondenseCompressionJobFailureRatioHigh",
        "KondenseReconcileErrors",
    }
    assert {name: rule["health"] for name, rule in rules.items()} == dict.fromkeys(rules, "ok")
