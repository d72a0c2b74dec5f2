"""`kondense-operator`: the kopf operator that runs CompressionJobs as runner Jobs, and
CompressionSearches as CompressionJobs.

    kondense-operator --config /etc/kondense/config.yaml --all-namespaces \
        [--namespace NS ...] [--metrics-port 8080] [--health-port 8081] [--log-level info]

Metrics on :8080/metrics, liveness/readiness on :8081/healthz. Talks to the cluster with the
in-cluster service account, or KUBECONFIG outside a cluster. Imports neither torch nor
onnxruntime.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.server
import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from kondense.operator import handlers, metrics
from kondense.operator.config import ConfigError, credential_env_warnings, load_config
from kondense.operator.jobs import LABEL_MANAGED_BY, MANAGED_BY
from kondense.operator.leader import LeaderElection
from kondense.operator.reconcile import REQUEST_TIMEOUT_S, Reconciler
from kondense.operator.search import SearchReconciler

log = logging.getLogger("kondense.operator")

# A watch that silently stops delivering events is kopf's known failure mode: the server ends
# each watch after this long and the client gives up a little later, so streams are renewed.
WATCH_SERVER_TIMEOUT_S = 120
WATCH_CLIENT_TIMEOUT_S = 150
WATCH_CONNECT_TIMEOUT_S = 10
# Failed reconciles are retried this often; every job in flight is revisited 6x as rarely.
RESYNC_INTERVAL_S = 10.0
# Threads reconciling queued jobs: each mostly waits on the apiserver. With 100 jobs applied at
# once, 16 (and the handlers blocking on per-job locks) put apply -> Job p99 at 7.8 s.
RECONCILE_WORKERS = 16
CHILDREN_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kondense-operator", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="node-pool configuration YAML")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace")
    scope.add_argument(
        "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    parser.add_argument("--metrics-port", type=int, default=8080)
    parser.add_argument("--health-port", type=int, default=8081)
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--leader-election",
        action="store_true",
        help="run as one of several replicas: only the holder of a coordination.k8s.io Lease "
        "is active, the others stand by and take over when it stops renewing",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("KONDENSE_OPERATOR_NAMESPACE", "default"),
        help="namespace of the Lease (default: $KONDENSE_OPERATOR_NAMESPACE, else default)",
    )
    parser.add_argument(
        "--leader-election-id",
        default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}",
        help="this replica's name in the Lease (default: $POD_NAME)",
    )
    return parser.parse_args(argv)


def has_patterns(namespaces: list[str]) -> bool:
    """Whether any --namespace is a kopf glob or exclusion rather than an exact name."""
    return any(char in name for name in namespaces for char in "*?[!,")


def api_client() -> Any:
    """An ApiClient from the in-cluster service account, else from KUBECONFIG."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    # One connection per thread that calls (workers, resync, leader election): a full pool
    # discards connections and the next call pays a new TLS handshake.
    configuration.connection_pool_maxsize = RECONCILE_WORKERS + 4
    return client.ApiClient(configuration)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT_S
    # kopf's own calls (not the watches) get the reconciler's limit, not aiohttp's 5 minutes.
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.networking.connect_timeout = WATCH_CONNECT_TIMEOUT_S
    # The handlers' `labels=` filter runs on the client, after the apiserver streamed every
    # Pod and Job in the cluster; these selectors go into the watch requests themselves.
    for group, plural in (("batch", "jobs"), ("", "pods")):
        settings.watching.label_selectors[group, "v1", plural] = CHILDREN_SELECTOR
    # Handler progress (if kopf ever keeps any) goes to annotations, which a structural
    # schema never prunes; nothing is written to status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kondense.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kondense.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "kondense.dev/finalizer"
    # Handlers only queue work for the Reconciler's workers: a few threads serve them.
    settings.execution.max_workers = 4
    # The operator posts its own Events per transition; kopf's per-handler ones are noise.
    settings.posting.enabled = False


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(**kwargs)
    if info is None:
        return kopf.login_with_kubeconfig(**kwargs)
    return dataclasses.replace(info, server=in_cluster_server(os.environ) or info.server)


def in_cluster_server(environ: Mapping[str, str]) -> str | None:
    """The apiserver URL from KUBERNETES_SERVICE_HOST/PORT, as client-go's in-cluster config
    builds it. kopf's service-account login assumes https://kubernetes.default.svc, which only
    resolves where the pod uses cluster DNS (not with hostNetwork or a custom dnsPolicy)."""
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def lead(args: argparse.Namespace, client: Any) -> None:
    """Stand by until this replica holds the Lease (answering the health probe meanwhile),
    then keep renewing it in the background; exit at once should it be lost."""
    election = LeaderElection(client, args.leader_election_namespace, args.leader_election_id)
    standby = serve_standby_health(args.health_port)
    log.info("standing by for the Lease %s/%s", election.namespace, election.name)
    try:
        election.wait_until_leader(threading.Event())
    finally:
        standby.shutdown()
        standby.server_close()
    log.info("%s holds the Lease: active", args.leader_election_id)
    threading.Thread(
        target=election.keep_leading, args=(_lost, threading.Event()), daemon=True
    ).start()


def _lost() -> None:
    # Another replica may be active already: stop every handler now, not after a clean-up.
    log.error("the leader Lease is lost: exiting so that one replica only is active")
    logging.shutdown()
    os._exit(1)


def serve_standby_health(port: int) -> http.server.ThreadingHTTPServer:
    """/healthz for a standby replica (kopf serves it once this replica is active)."""

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"standby\n")

        def log_message(self, *_: Any) -> None:
            pass

    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"kondense-operator: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # kopf owns the log format; --log-level picks its verbosity.
    kopf.configure(verbose=args.log_level == "debug", quiet=args.log_level in ("warning", "error"))
    logging.getLogger("kondense").setLevel(args.log_level.upper())
    for warning in credential_env_warnings(config):
        log.warning("%s: %s", args.config, warning)
    reconciler = Reconciler(api_client(), config)
    SearchReconciler(reconciler)  # CompressionSearches go through the same workers
    metrics.serve(args.metrics_port)
    if args.leader_election:
        lead(args, reconciler.api_client)
    stop = threading.Event()
    threading.Thread(
        target=reconciler.resync_forever, args=(RESYNC_INTERVAL_S, stop), daemon=True
    ).start()
    for _ in range(RECONCILE_WORKERS):
        threading.Thread(target=reconciler.work_forever, args=(stop,), daemon=True).start()
    settings = kopf.OperatorSettings()
    # Watching listed namespaces, the operator gets Roles in those namespaces only (the Helm
    # chart's rbac.scope=namespaced): kopf must not list namespaces and CRDs cluster-wide, or it
    # retries the 403s for minutes before falling back. Its documented restricted mode.
    # A glob (`team-*`) is resolved by listing namespaces, so scanning stays on for patterns.
    settings.scanning.disabled = bool(args.namespace) and not has_patterns(args.namespace)
    kopf.run(
        # No kopf peering objects: one operator per cluster, or one active replica of several
        # through the Lease (--leader-election).
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        settings=settings,
        # Every handler finds the reconciler in its memo (handlers.py).
        memo=kopf.Memo({handlers.MEMO_KEY: reconciler}),
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
    )


if __name__ == "__main__":
    main()
