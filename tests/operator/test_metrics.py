"""Operator metrics: the by-phase census and the figures of finished jobs."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kondense.operator.metrics import REGISTRY, JobTable


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(REGISTRY).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def running(recipe: str = "int8-dynamic") -> dict[str, object]:
    return {"phase": "Running", "recipe": recipe, "runner": {"pool": "cpu"}}


def finished(recipe: str = "int8-dynamic") -> dict[str, object]:
    return {
        "phase": "Succeeded",
        "recipe": recipe,
        "runner": {"pool": "cpu"},
        "results": {"sizeRatio": 3.9, "speedup": 1.7, "metricDrop": 0.002},
        "startTime": "2026-01-01T00:00:00Z",
        "completionTime": "2026-01-01T00:01:30Z",
    }


def test_jobs_are_counted_by_phase_recipe_and_pool_and_forgotten_when_deleted() -> None:
    table = JobTable()
    table.record("m1", "a", running("recipe-m1"))
    table.record("m1", "b", running("recipe-m1"))
    key = (
        "kondense_compressionjobs",
        (("phase", "Running"), ("pool", "cpu"), ("recipe", "recipe-m1")),
    )
    assert samples()[key] == 2
    table.forget("m1", "a")
    table.forget("m1", "b")
    assert key not in samples()


def test_finished_job_exports_ratio_speedup_drop_and_duration_once() -> None:
    table = JobTable()
    table.record("m2", "done", running("recipe-m2"))
    table.record("m2", "done", finished("recipe-m2"))
    table.record("m2", "done", finished("recipe-m2"))  # a repeated observation is not re-timed
    labels = (("name", "done"), ("namespace", "m2"), ("pool", "cpu"), ("recipe", "recipe-m2"))
    got = samples()
    assert got[("kondense_compressionjob_size_ratio", labels)] == 3.9
    assert got[("kondense_compressionjob_speedup", labels)] == 1.7
    assert got[("kondense_compressionjob_metric_drop", labels)] == 0.002
    timed = (("phase", "Succeeded"), ("pool", "cpu"), ("recipe", "recipe-m2"))
    count = got[("kondense_compressionjob_duration_seconds_count", timed)]
    total = got[("kondense_compressionjob_duration_seconds_sum", timed)]
    ended = (("phase", "Succeeded"), ("pool", "cpu"), ("reason", "Succeeded"))
    assert got[("kondense_compressionjobs_finished_total", ended)] == 1
    assert count >= 1 and total >= 90
    table.forget("m2", "done")
    assert ("kondense_compressionjob_size_ratio", labels) not in samples()


def test_build_info_names_the_running_version() -> None:
    from importlib.metadata import version

    (info,) = [(n, labels) for (n, labels) in samples() if n == "kondense_build_info"]
    assert ("version", version("kondense")) in info[1]


def test_failures_are_counted_by_reason() -> None:
    table = JobTable()
    table.record("m4", "oom", running())
    table.record("m4", "oom", {**finished(), "phase": "Failed", "reason": "OOMKilled"})
    ended = (("phase", "Failed"), ("pool", "cpu"), ("reason", "OOMKilled"))
    assert samples()[("kondense_compressionjobs_finished_total", ended)] == 1
    table.forget("m4", "oom")


def test_a_scrape_during_a_census_always_sees_every_series() -> None:
    """The census used to clear the gauge and fill it again: a scrape in between saw none."""
    import sys
    import threading

    table = JobTable()
    table.record("m3", "steady", running("recipe-m3"))
    key = (
        "kondense_compressionjobs",
        (("phase", "Running"), ("pool", "cpu"), ("recipe", "recipe-m3")),
    )
    stop = threading.Event()
    gaps: list[int] = []

    def scrape() -> None:
        while not stop.is_set():
            if key not in samples():
                gaps.append(1)

    scraper = threading.Thread(target=scrape)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        scraper.start()
        for i in range(3000):
            table.record("m3", f"other-{i % 7}", running("recipe-m3b"))
    finally:
        stop.set()
        scraper.join()
        sys.setswitchinterval(interval)
        table.forget("m3", "steady")
        for i in range(7):
            table.forget("m3", f"other-{i}")
    assert gaps == []


def test_a_job_that_fails_on_its_first_reconcile_is_counted_once() -> None:
    """An unknown pool or an invalid spec fails a job on the reconcile that first sees it: the
    table never knew it unfinished, but the status it replaced says it moved."""
    failed = {"phase": "Failed", "reason": "UnknownNodePool", "runner": {"pool": "m5-pool"}}
    ended = (("phase", "Failed"), ("pool", "m5-pool"), ("reason", "UnknownNodePool"))
    table = JobTable()
    table.record("m5", "bad", failed, previous={})
    table.record("m5", "bad", failed, previous=failed)  # rewritten: not a second end
    assert samples()[("kondense_compressionjobs_finished_total", ended)] == 1
    restarted = JobTable()  # a new operator process reads the job, already Failed
    restarted.record("m5", "bad", failed)
    assert samples()[("kondense_compressionjobs_finished_total", ended)] == 1
    table.forget("m5", "bad")


def stalled(reason: str) -> dict[str, object]:
    return {
        "phase": "Pending",
        "recipe": "int8-dynamic",
        "runner": {"pool": "gpu"},
        "conditions": [
            {"type": "Ready", "status": "False", "reason": reason},
            {"type": "Stalled", "status": "True", "reason": reason},
        ],
    }


def test_a_stalled_job_is_exported_with_its_reason_until_it_moves_on() -> None:
    table = JobTable()
    table.record("m6", "stuck", stalled("Unschedulable"))
    key = ("namespace", "m6"), ("name", "stuck"), ("pool", "gpu")

    def exported() -> list[str]:
        return [
            dict(labels)["reason"]
            for (name, labels), value in samples().items()
            if name == "kondense_compressionjob_stalled" and set(key) <= set(labels) and value == 1
        ]

    assert exported() == ["Unschedulable"]
    table.record("m6", "stuck", stalled("ImagePullBackOff"))
    assert exported() == ["ImagePullBackOff"]
    table.record("m6", "stuck", running())
    assert exported() == []
    table.record("m6", "stuck", stalled("Unschedulable"))
    table.record("m6", "stuck", {**stalled("OOMKilled"), "phase": "Failed"})  # ended: not stalled
    assert exported() == []
    table.record("m6", "stuck", stalled("Unschedulable"))
    table.forget("m6", "stuck")
    assert exported() == []


def test_metric_names_pass_promtool_check_metrics() -> None:
    """Every family, with samples, as the endpoint serves them; and promtool does flag a name
    against the conventions (a gauge named like a counter)."""
    from fixtures import prometheus
    from prometheus_client import CollectorRegistry, Gauge

    from kondense.operator.metrics import RECONCILE_ERRORS, record_search_finished

    prometheus.install()
    table = JobTable()
    table.record("m7", "done", running("recipe-m7"))
    table.record("m7", "done", finished("recipe-m7"))
    table.record("m7", "stuck", stalled("Unschedulable"))
    RECONCILE_ERRORS.labels("ApiException").inc()
    record_search_finished("Succeeded", ["accepted", "rejected"], 300.0)
    text = generate_latest(REGISTRY).decode()
    families = {f.name for f in text_string_to_metric_families(text) if f.samples}
    assert len(families) >= 11, families
    code, said = prometheus.promtool("check", "metrics", stdin=text)
    assert code == 0 and said.strip() == "", said
    table.forget("m7", "done")
    table.forget("m7", "stuck")

    wrong = CollectorRegistry()
    Gauge("kondense_jobs_total", "A gauge named like a counter.", registry=wrong).set(1)
    code, said = prometheus.promtool("check", "metrics", stdin=generate_latest(wrong).decode())
    assert code != 0 and "kondense_jobs_total" in said, said


def test_a_finished_search_counts_its_candidates_by_outcome_and_observes_its_duration() -> None:
    from kondense.operator.metrics import record_search_finished

    before = samples()
    record_search_finished("Succeeded", ["accepted", "rejected", "rejected", "failed"], 420.0)
    after = samples()

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    total = "kondense_search_candidates_total"
    assert moved(total, outcome="accepted") == 1 and moved(total, outcome="rejected") == 2
    assert moved(total, outcome="failed") == 1
    assert moved("kondense_search_duration_seconds_count", phase="Succeeded") == 1
    assert moved("kondense_search_duration_seconds_sum", phase="Succeeded") == 420.0
    assert moved("kondense_search_duration_seconds_bucket", phase="Succeeded", le="300.0") == 0
    assert moved("kondense_search_duration_seconds_bucket", phase="Succeeded", le="600.0") == 1
