"""The chart's PrometheusRule, rendered with helm template, passes `promtool check rules` and
the alert tests of tests/chart/prometheus/kondense-rules.test.yaml (`promtool test rules`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fixtures import prometheus
from fixtures.helm import by_kind, render

RULE_TESTS = Path(__file__).parent / "prometheus" / "kondense-rules.test.yaml"


@pytest.fixture(scope="module", autouse=True)
def _promtool() -> None:
    prometheus.install()


def rules_dir(helm_bin: Path, tmp_path: Path, *sets: str) -> Path:
    """A folder with the rendered rule groups as kondense-rules.yaml and the rule tests."""
    args = ["--set", "metrics.prometheusRule.enabled=true"]
    for value in sets:
        args += ["--set-json", value]
    (rule,) = by_kind(render(helm_bin, *args), "PrometheusRule")
    (tmp_path / "kondense-rules.yaml").write_text(prometheus.rule_groups(rule))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return tmp_path


def test_prometheus_rule_is_off_by_default(helm_bin: Path) -> None:
    assert not by_kind(render(helm_bin), "PrometheusRule")


def test_alert_rules_pass_promtool_check_and_their_tests(helm_bin: Path, tmp_path: Path) -> None:
    folder = rules_dir(helm_bin, tmp_path)
    code, said = prometheus.promtool("check", "rules", "kondense-rules.yaml", cwd=folder)
    assert code == 0 and "SUCCESS: 3 rules found" in said, said
    code, said = prometheus.promtool("test", "rules", RULE_TESTS.name, cwd=folder)
    assert code == 0, said


@pytest.mark.parametrize(
    ("value", "alert"),
    [
        ('metrics.prometheusRule.stalledFor="45m"', "KondenseCompressionJobStalled"),
        ("metrics.prometheusRule.failureRatio=0.8", "KondenseCompressionJobFailureRatioHigh"),
        ("metrics.prometheusRule.failureMinJobs=1000", "KondenseCompressionJobFailureRatioHigh"),
        ("metrics.prometheusRule.failureMinJobs=1", "KondenseCompressionJobFailureRatioHigh"),
        ("metrics.prometheusRule.failureRatio=0.4", "KondenseCompressionJobFailureRatioHigh"),
        ('metrics.prometheusRule.reconcileErrorsFor="30m"', "KondenseReconcileErrors"),
    ],
    ids=["stalled-for", "ratio-high", "min-jobs-high", "min-jobs-low", "ratio-low", "errors-for"],
)
def test_the_rule_tests_fail_when_a_threshold_value_changes(
    helm_bin: Path, tmp_path: Path, value: str, alert: str
) -> None:
    """The values reach the rules: with a threshold the test data does (or no longer does) cross,
    an alert the tests expect does not fire (or one they do not expect does), and promtool says
    which."""
    folder = rules_dir(helm_bin, tmp_path, value)
    code, said = prometheus.promtool("test", "rules", RULE_TESTS.name, cwd=folder)
    assert code != 0 and f"alertname: {alert}" in said, said


def test_prometheus_rule_namespace_and_labels(helm_bin: Path) -> None:
    objects = render(
        helm_bin,
        "--set", "metrics.prometheusRule.enabled=true",
        "--set", "metrics.prometheusRule.namespace=monitoring",
        "--set", "metrics.prometheusRule.labels.release=prometheus",
    )  # fmt: skip
    (rule,) = by_kind(objects, "PrometheusRule")
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
