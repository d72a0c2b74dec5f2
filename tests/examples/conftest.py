"""The examples' cluster tests run against the operator of tests/fixtures/operator_cluster.py."""

from fixtures.operator_cluster import crd, history, kop_namespace, operator, operator_workdir

__all__ = ["crd", "history", "kop_namespace", "operator", "operator_workdir"]
