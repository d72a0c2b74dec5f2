"""The chart's aggregated ClusterRoles give the built-in view, edit and admin roles access to
CompressionJobs and CompressionSearches, on the real apiserver and controller-manager (issue
#14 item 3): users bound to each role in a namespace are checked with `kubectl auth can-i
--as`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fixtures.cluster import Cluster
from fixtures.helm import CHART, helm

pytestmark = pytest.mark.cluster

USERS = {"viewer": "view", "editor": "edit", "administrator": "admin"}


@pytest.fixture
def user_roles(cluster: Cluster, helm_bin: Path, namespace: str) -> Iterator[list[str]]:
    """The chart's user-facing ClusterRoles (a release name of their own), and RoleBindings of
    three users to the built-in view, edit and admin roles in `namespace`."""
    release = f"ur{uuid.uuid4().hex[:6]}"
    rendered = helm(
        helm_bin, "template", release, str(CHART), "--show-only", "templates/user-roles.yaml"
    ).stdout
    roles = [doc for doc in yaml.safe_load_all(rendered) if doc]
    cluster.kubectl_run("apply", "-f", "-", input=rendered)
    for user, role in USERS.items():
        cluster.kubectl_run(
            "create", "rolebinding", f"{user}-{role}", "-n", namespace,
            f"--clusterrole={role}", f"--user={user}",
        )  # fmt: skip
    try:
        yield [r["metadata"]["name"] for r in roles]
    finally:
        cluster.kubectl_run(
            "delete", "clusterrole", *(r["metadata"]["name"] for r in roles), "--wait=false"
        )


def can(
    cluster: Cluster,
    user: str,
    verb: str,
    namespace: str,
    *extra: str,
    resource: str = "compressionjobs",
) -> bool:
    done = cluster.kubectl_run(
        "auth", "can-i", verb, f"{resource}.kondense.dev", "-n", namespace, f"--as={user}",
        *extra, check=False,
    )  # fmt: skip
    return done.stdout.strip() == "yes"


def aggregated(cluster: Cluster, namespace: str, timeout: float = 60) -> None:
    """The aggregation controller copies the rules into admin last (admin aggregates edit's
    labels too); wait until it has, polling can-i as a watch on ClusterRoles would."""
    deadline = time.monotonic() + timeout
    while not can(cluster, "administrator", "delete", namespace):
        assert time.monotonic() < deadline, "the admin role never gained compressionjobs"
        time.sleep(0.5)


def test_view_edit_and_admin_reach_compressionjobs_as_kubernetes_roles_do(
    cluster: Cluster, namespace: str, user_roles: list[str]
) -> None:
    aggregated(cluster, namespace)
    for kind in ("compressionjobs", "compressionsearches"):
        for user in USERS:
            for verb in ("get", "list", "watch"):
                assert can(cluster, user, verb, namespace, resource=kind), (kind, user, verb)
        for verb in ("create", "update", "patch", "delete", "deletecollection"):
            assert not can(cluster, "viewer", verb, namespace, resource=kind), (kind, verb)
            assert can(cluster, "editor", verb, namespace, resource=kind), (kind, verb)
            assert can(cluster, "administrator", verb, namespace, resource=kind), (kind, verb)
        # Status is the operator's alone.
        for user in USERS:
            status = "--subresource=status"
            assert not can(cluster, user, "patch", namespace, status, resource=kind), (kind, user)
    # A binding in one namespace gives nothing in another.
    assert not can(cluster, "editor", "get", "default")


def test_turning_them_off_renders_no_user_roles(helm_bin: Path) -> None:
    done = helm(
        helm_bin, "template", "kd", str(CHART), "--set", "rbac.aggregateToUserRoles=false",
        "--show-only", "templates/user-roles.yaml", check=False,
    )  # fmt: skip
    assert "could not find template" in done.stderr
