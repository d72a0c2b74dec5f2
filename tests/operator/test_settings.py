"""kopf settings: watches cannot go silent, progress is never stored in status."""

from __future__ import annotations

import kopf

from kondense.operator.main import configure, has_patterns, parse_args


def test_watch_timeouts_are_set_and_progress_goes_to_annotations() -> None:
    settings = kopf.OperatorSettings()
    configure(settings=settings)
    assert settings.watching.server_timeout and settings.watching.client_timeout
    assert settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.watching.connect_timeout
    assert settings.networking.request_timeout and settings.networking.request_timeout <= 60
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)


def test_command_line_matches_the_helm_chart() -> None:
    """The chart's Deployment passes these flags (charts/kondense/templates/deployment.yaml)."""
    args = parse_args(
        ["--config=/etc/kondense/config.yaml", "--all-namespaces", "--metrics-port=8080",
         "--health-port=8081", "--log-level=info"]
    )  # fmt: skip
    assert args.all_namespaces and args.namespace == [] and args.health_port == 8081
    scoped = parse_args(["--config=c.yaml", "--namespace=a", "--namespace=b"])
    assert scoped.namespace == ["a", "b"]


def test_only_namespace_globs_keep_kopf_scanning_namespaces() -> None:
    """Exact names need no cluster-wide listing (namespaced RBAC); globs cannot work without."""
    assert not has_patterns(["team-a", "team-b"])
    assert has_patterns(["team-*"]) and has_patterns(["!kube-system"])


def test_handlers_take_the_reconciler_from_kopfs_memo() -> None:
    """No module global: main() passes kopf.Memo(reconciler=...) to kopf.run."""
    import pytest

    from kondense.operator import handlers
    from kondense.operator.reconcile import Reconciler

    calls: list[tuple[str, str]] = []

    class Recording(Reconciler):
        def __init__(self) -> None:  # no ApiClient needed to record calls
            pass

        def enqueue(
            self, namespace: str, name: str, new: bool = False, snapshot: object = None
        ) -> None:
            calls.append((namespace, name))

    body = kopf.Body({"metadata": {"namespace": "ns", "name": "m"}})
    handlers.compression_job_event(
        body=body, type="MODIFIED", memo=kopf.Memo({handlers.MEMO_KEY: Recording()})
    )
    assert calls == [("ns", "m")]
    assert not hasattr(handlers, "RECONCILER")
    with pytest.raises(kopf.PermanentError):
        handlers.compression_job_event(body=body, type="MODIFIED", memo=kopf.Memo())


def test_a_search_childs_events_queue_its_search() -> None:
    """A CompressionJob a search owns moved on: its search (named by the child's label) is
    queued as a CompressionSearch, whatever the child's own status says."""
    from kondense.api.search import LABEL_SEARCH, SEARCH_KIND
    from kondense.operator import handlers
    from kondense.operator.reconcile import Reconciler

    calls: list[tuple[str, str, str]] = []

    class Recording(Reconciler):
        def __init__(self) -> None:
            pass

        def enqueue(  # type: ignore[override]
            self,
            namespace: str,
            name: str,
            new: bool = False,
            snapshot: object = None,
            kind: str = "CompressionJob",
        ) -> None:
            calls.append((kind, namespace, name))

    child = kopf.Body(
        {
            "metadata": {"namespace": "ns", "name": "s-00-screen", "generation": 1,
                         "labels": {LABEL_SEARCH: "s"}},
            "status": {"observedGeneration": 1, "phase": "Succeeded"},
        }
    )  # fmt: skip
    memo = kopf.Memo({handlers.MEMO_KEY: Recording()})
    handlers.search_child_event(body=child, memo=memo)
    search = kopf.Body({"metadata": {"namespace": "ns", "name": "s", "generation": 1}})
    handlers.compression_search_event(body=search, type=None, memo=memo)
    assert calls == [(SEARCH_KIND, "ns", "s"), (SEARCH_KIND, "ns", "s")]


def test_runner_jobs_and_pods_are_filtered_by_label_on_the_server() -> None:
    """kopf's handler `labels=` filter runs on the client, after every Pod and Job in the
    cluster was streamed; a watching.label_selectors entry goes into the watch request."""
    from kopf._cogs.structs.references import Resource

    settings = kopf.OperatorSettings()
    configure(settings=settings)
    selectors = settings.watching.label_selectors
    for resource in (
        Resource("batch", "v1", "jobs", kind="Job", namespaced=True),
        Resource("", "v1", "pods", kind="Pod", namespaced=True),
    ):
        assert selectors.collect(resource) == ["app.kubernetes.io/managed-by=kondense-operator"]
    ours = Resource("kondense.dev", "v1alpha1", "compressionjobs", kind="CompressionJob")
    assert selectors.collect(ours) == []
