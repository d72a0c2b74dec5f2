"""The operator's cluster fixtures live in tests/fixtures/operator_cluster.py (importable)."""

from fixtures.operator_cluster import (
    bucket,
    crd,
    history,
    kop_namespace,
    operator,
    operator_workdir,
)

__all__ = ["bucket", "crd", "history", "kop_namespace", "operator", "operator_workdir"]
