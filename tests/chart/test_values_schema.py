"""values.schema.json refuses mistakes in a values file with a message naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixtures.helm import template_error


def test_misspelled_top_level_key_is_refused(helm_bin: Path, tmp_path: Path) -> None:
    err = template_error(helm_bin, tmp_path, {"replicas": 2})
    assert "additional properties 'replicas' not allowed" in err


def test_misspelled_pool_key_is_refused_naming_the_pool(helm_bin: Path, tmp_path: Path) -> None:
    err = template_error(helm_bin, tmp_path, {"pools": {"cpu": {"nodeSelecter": {"a": "b"}}}})
    assert "/pools/cpu" in err and "'nodeSelecter' not allowed" in err


def test_wrong_type_is_refused_naming_the_key(helm_bin: Path, tmp_path: Path) -> None:
    err = template_error(helm_bin, tmp_path, {"metrics": {"port": "eighty"}})
    assert "/metrics/port" in err and "want integer" in err


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"rbac": {"scope": "namespace"}}, "/rbac/scope"),
        ({"operator": {"logLevel": "verbose"}}, "/operator/logLevel"),
        ({"pools": {"gpu": {"tolerations": [{"operator": "Exist"}]}}}, "/pools/gpu/tolerations/0"),
    ],
    ids=["rbac-scope", "log-level", "toleration-operator"],
)
def test_value_outside_its_enum_is_refused(
    helm_bin: Path, tmp_path: Path, values: dict[str, Any], named: str
) -> None:
    err = template_error(helm_bin, tmp_path, values)
    assert named in err and "value must be one of" in err


def test_namespaced_rbac_without_namespaces_is_refused(helm_bin: Path, tmp_path: Path) -> None:
    err = template_error(helm_bin, tmp_path, {"rbac": {"scope": "namespaced"}})
    assert "watchNamespaces" in err


@pytest.mark.parametrize(
    ("values", "named", "says"),
    [
        ({"metrics": {"prometheusRule": {"failureRatio": 1.5}}}, "failureRatio", "maximum"),
        ({"metrics": {"prometheusRule": {"stalledFor": "15 minutes"}}}, "stalledFor", "match"),
        ({"metrics": {"prometheusRule": {"failureMinJobs": 0}}}, "failureMinJobs", "minimum"),
        (
            {"metrics": {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}}},
            "labels",
            "want string",
        ),
    ],
    ids=["ratio-above-1", "duration-in-words", "no-jobs", "label-not-string"],
)
def test_monitoring_values_are_checked(
    helm_bin: Path, tmp_path: Path, values: dict[str, Any], named: str, says: str
) -> None:
    err = template_error(helm_bin, tmp_path, values)
    assert "/metrics/" in err and named in err and says in err, err
