"""Shared fixtures live in tests/fixtures/ (importable because pytest's pythonpath has tests/)."""

pytest_plugins = [
    "fixtures.models",
    "fixtures.cluster",
    "fixtures.operator_cluster",
    "fixtures.kueue",
]
