"""`make chaos`: CompressionJobs on the local control plane while the operator is SIGKILLed at
random moments (some right as a runner Job appears, before its status names it), the apiserver
is restarted, finished runner pods are deleted, a job is deleted and recreated under its name,
the operator is restarted with a configuration that lacks a pool in use, two replicas run with
--leader-election, and a real fault-injection proxy (Toxiproxy, tests/cluster/toxiproxy) between
the operators and the apiserver adds latency, resets connections and stalls them.

    make chaos                                   # 100 jobs, 20 kills (a benchmark: minutes)
    python bench/chaos.py --jobs 100 --kills 20 [--json build/chaos.json]

It prints the kills survived, jobs lost, duplicate Jobs, terminal regressions, vanished results
and the time to recover; every count but the kills must be 0 (exit 1 otherwise). The invariants
are checked by tests/fixtures/operator_cluster.py's History, from watches that go straight to
the apiserver. Every runner is a real pod of the runner image on the cluster's nodes. Most run
a cheap command (a shell that writes a small valid Outcome to the termination log): this
measures the operator, not the compression; a few run real recipes on a model in the cluster's
S3 server. tests/operator/test_chaos.py runs a reduced plan in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.cluster import Cluster, free_port, wait_default_service_account  # noqa: E402
from fixtures.operator_cluster import (  # noqa: E402
    CHILDREN,
    GROUP,
    PLURAL,
    TERMINAL,
    VERSION,
    History,
    _status_problems,
    apply_crd,
    local_cluster,
    pull_runner_image,
    runner_pools,
)

STATE_DIR = REPO / ".cluster"
KUBECONFIG = STATE_DIR / "kubeconfig"
TOXIPROXY_BUILD = REPO / "tests" / "cluster" / "toxiproxy" / "build.sh"
# The cheap runner's pods: a shell, a sleep and a printf.
CHEAP_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}


@dataclass
class Plan:
    """What happens during one run; the defaults are `make chaos`'s."""

    jobs: int = 100  # CompressionJobs, real and legacy ones included
    real: int = 3  # of them, real recipes (kondense run on a tiny ONNX MLP)
    legacy: int = 3  # of them, on a pool the configuration loses mid-run
    kills: int = 20
    kills_on_job_created: int = 5  # of them, sent as soon as a runner Job appears
    replicas: int = 2  # > 1: --leader-election
    apiserver_restarts: int = 1
    delete_recreate: int = 1
    delete_finished_pods: bool = True
    toxics: int = 3  # windows of latency, reset_peer and timeout, in turn
    period_s: float = 240.0  # faults happen within this many seconds of the first apply
    quick_runner_s: float = 3.0  # how long the cheap runner takes
    legacy_runner_s: float = 40.0
    timeout_s: float = 900.0  # after the period, for every job to finish
    seed: int = 12


@dataclass
class Figures:
    kills_survived: int = 0
    kills_between_job_and_status: int = 0
    jobs_lost: int = 0
    jobs_failed: int = 0
    duplicate_jobs: int = 0
    terminal_regressions: int = 0
    vanished_results: int = 0
    time_to_recover_s: float = 0.0  # the longest from a SIGKILL to the next status written
    time_to_recover_p50_s: float = 0.0
    all_finished_after_last_fault_s: float = 0.0
    jobs: int = 0
    apiserver_restarts: int = 0
    apiserver_down_s: float = 0.0  # SIGTERM to ready again
    finished_pods_deleted: int = 0
    recreated: int = 0
    toxic_windows: int = 0
    config_without_pool: bool = False
    problems: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        counts = (
            self.jobs_lost,
            self.jobs_failed,
            self.duplicate_jobs,
            self.terminal_regressions,
            self.vanished_results,
        )
        return not any(counts)


def quick_outcome() -> str:
    """A small valid Outcome, as the runner writes it, with results and an artifact."""
    from kondense.api.outcome import Artifact, Figures, Outcome, Results, termination_message

    figures = {"bytes": 4000, "latencyMsP50": 1.0, "latencyMsP95": 1.2, "throughput": 900.0}
    results = Results.model_validate(
        {
            "baseline": Figures.model_validate(figures),
            "compressed": Figures.model_validate({**figures, "bytes": 1000}),
            "metricName": "agreement",
            "metricDrop": 0.0,
            "sizeRatio": 4.0,
            "speedup": 1.0,
            "device": "cpu",
            "threads": 1,
            "batchSize": 1,
        }
    )
    artifact = Artifact(name="model.onnx", uri="s3://chaos/model.onnx", sha256="0" * 64, bytes=1)
    outcome = Outcome(
        succeeded=True,
        reason="Succeeded",
        message="the cheap chaos runner",
        results=results,
        artifacts=[artifact],
    )
    return termination_message(outcome)


def pool_config(cluster: Cluster, plan: Plan, with_legacy: bool) -> dict[str, Any]:
    """The cluster's cpu pool (real recipes) and the cheap pools, all in the runner image."""
    cpu = runner_pools(cluster)["cpu"]
    cheap = {**cpu, "resources": CHEAP_RESOURCES}
    write = f"printf '%s' '{quick_outcome()}' > /dev/termination-log"
    pools: dict[str, Any] = {
        "cpu": cpu,
        "quick": {**cheap, "command": ["sh", "-c", f"sleep {plan.quick_runner_s}; {write}"]},
    }
    if with_legacy:
        command = ["sh", "-c", f"sleep {plan.legacy_runner_s}; {write}"]
        pools["legacy"] = {**cheap, "command": command}
    return {"backoffLimit": 2, "pools": pools}


class Toxiproxy:
    """The Toxiproxy server with one proxy from a loopback port to the apiserver."""

    def __init__(self, workdir: Path, upstream: str) -> None:
        binary = subprocess.run(
            [str(TOXIPROXY_BUILD)], check=True, capture_output=True, text=True
        ).stdout.strip()
        self.api_port, self.port = free_port(), free_port()
        self.process = subprocess.Popen(
            [binary, "-host", "127.0.0.1", "-port", str(self.api_port)],
            stdout=open(workdir / "toxiproxy.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/version")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # polling the server's start
        self._call(
            "POST",
            "/proxies",
            {"name": "apiserver", "listen": f"127.0.0.1:{self.port}", "upstream": upstream},
        )

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            text = reply.read()
        try:
            return json.loads(text)
        except ValueError:
            return text.decode()

    def add(self, name: str, kind: str, **attributes: int) -> None:
        self._call(
            "POST",
            "/proxies/apiserver/toxics",
            {"name": name, "type": kind, "stream": "downstream", "attributes": attributes},
        )

    def remove(self, name: str) -> None:
        self._call("DELETE", f"/proxies/apiserver/toxics/{name}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class Replica:
    """One operator process; SIGKILL and start again with the same identity (a StatefulSet's
    pod keeps its name), with whatever configuration is current."""

    def __init__(self, name: str, workdir: Path, kubeconfig: Path, namespace: str, ha: bool):
        self.name, self.workdir, self.kubeconfig = name, workdir, kubeconfig
        self.namespace, self.ha = namespace, ha
        self.health_port, self.metrics_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, config: Path) -> None:
        self.starts += 1
        ha = (
            ["--leader-election", f"--leader-election-namespace={self.namespace}",
             f"--leader-election-id={self.name}"]
            if self.ha else []
        )  # fmt: skip
        path = f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"
        self.process = subprocess.Popen(
            [
                str(REPO / ".venv" / "bin" / "kondense-operator"),
                f"--config={config}",
                f"--namespace={self.namespace}",
                f"--metrics-port={self.metrics_port}",
                f"--health-port={self.health_port}",
                *ha,
            ],
            env=dict(os.environ, KUBECONFIG=str(self.kubeconfig), PATH=path),
            stdout=open(self.workdir / f"{self.name}-{self.starts}.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def peak_rss_mib(self) -> float:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():  # type: ignore[union-attr]
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, AttributeError):
            pass
        return float("nan")


def restart_apiserver() -> None:
    """Stop kube-apiserver and start it again with the same command line (etcd keeps the
    data), as a control-plane upgrade does; .cluster/state.json learns the new pid."""
    state_file = STATE_DIR / "state.json"
    state = json.loads(state_file.read_text())
    pid = state["pids"]["kube-apiserver"]
    argv = state["argv"]["kube-apiserver"]  # it runs in the control plane's network namespace
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the apiserver drains its requests, then exits
    with open(STATE_DIR / "logs" / "kube-apiserver.log", "ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=STATE_DIR,
        )
    state["pids"]["kube-apiserver"] = process.pid
    temporary = state_file.with_suffix(".chaos")
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    temporary.replace(state_file)
    import ssl

    context = ssl.create_default_context(cafile=str(STATE_DIR / "pki" / "ca.crt"))
    request = urllib.request.Request(
        f"{state['server']}/readyz", headers={"Authorization": f"Bearer {state['token']}"}
    )
    while time.monotonic() < deadline + 60:
        try:
            with urllib.request.urlopen(request, timeout=3, context=context) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)  # polling readiness
    raise RuntimeError("kube-apiserver did not come back within two minutes")


def proxied_kubeconfig(port: int, path: Path) -> Path:
    """The admin kubeconfig, its server the proxy's port (the apiserver's certificate names
    127.0.0.1, so TLS passes through the TCP proxy unchanged)."""
    config = json.loads(KUBECONFIG.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def follow(history: History, api_client: Any) -> list[threading.Thread]:
    """The History's two watches, straight to the apiserver (not through the proxy)."""
    from kubernetes import client

    batch = client.BatchV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)

    def list_jobs(**kwargs: Any) -> Any:
        listing = batch.list_job_for_all_namespaces(label_selector=CHILDREN, **kwargs)
        return listing if kwargs.get("watch") else api_client.sanitize_for_serialization(listing)

    def list_cjs(**kwargs: Any) -> Any:
        return custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)

    threads = [
        threading.Thread(target=history.follow, args=(list_jobs, history.on_job), daemon=True),
        threading.Thread(target=history.follow, args=(list_cjs, history.on_cj), daemon=True),
    ]
    for thread in threads:
        thread.start()
    return threads


def quick_spec(name: str, pool: str) -> dict[str, Any]:
    return {
        "model": {"uri": "s3://chaos/model.onnx"},
        "steps": [{"quantize": {"mode": "dynamic"}}],
        "output": {"uri": f"s3://chaos/out/{name}"},
        "nodePool": pool,
    }


def real_spec(model: str, out: str) -> dict[str, Any]:
    inputs = [{"name": "x", "shape": [1, 16]}]
    return {
        "model": {"uri": model, "format": "onnx", "inputs": inputs},
        "steps": [{"quantize": {"mode": "dynamic"}}],
        "evaluation": {"requireSpeedup": False, "maxMetricDrop": 1.0, "warmup": 2, "runs": 20},
        "output": {"uri": out},
    }  # fmt: skip


def run(plan: Plan, log: Callable[[str], None] = print) -> Figures:
    """Run `plan` against the local control plane (up already); the figures."""
    from fixtures.models import build_tiny_onnx
    from kubernetes import client, config, watch

    rng = random.Random(plan.seed)
    api_client = config.new_client_from_config(config_file=str(KUBECONFIG))
    cluster = local_cluster(api_client)
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    apply_crd()
    namespace = f"kchaos-{uuid.uuid4().hex[:6]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace({"metadata": {"name": namespace, "labels": labels}})
    workdir = Path(tempfile.mkdtemp(prefix="chaos-", dir=REPO / "build"))
    log(f"namespace {namespace}, logs in {workdir}")
    wait_default_service_account(cluster, namespace)
    log(f"the runner image is on every node after {pull_runner_image(cluster, namespace):.0f} s")
    # The real recipes' model, in the cluster's S3 server (a bucket named like the namespace).
    model = (
        cluster.put_s3(build_tiny_onnx(workdir / "tiny.onnx"), namespace, "tiny.onnx")
        if plan.real
        else ""
    )
    configs = {}
    for with_legacy in (True, False):
        path = workdir / f"config-{'full' if with_legacy else 'without-legacy'}.yaml"
        path.write_text(yaml.safe_dump(pool_config(cluster, plan, with_legacy)))
        configs[with_legacy] = path
    current_config = [configs[True]]
    figures = Figures(jobs=plan.jobs)
    history = History()
    follow(history, api_client)
    server = json.loads(KUBECONFIG.read_text())["clusters"][0]["cluster"]["server"]
    toxiproxy = Toxiproxy(workdir, server.removeprefix("https://"))
    kubeconfig = proxied_kubeconfig(toxiproxy.port, workdir / "kubeconfig")
    replicas = [
        Replica(f"operator-{i}", workdir, kubeconfig, namespace, plan.replicas > 1)
        for i in range(plan.replicas)
    ]
    for replica in replicas:
        replica.start(current_config[0])
    stop = threading.Event()
    lock = threading.Lock()  # one fault at a time touches the replicas
    last_fault = [time.monotonic()]
    kill_times: list[float] = []
    writes: list[float] = []  # when a status the operator writes was seen

    def watch_writes() -> None:
        while not stop.is_set():
            try:
                stream = watch.Watch().stream(
                    custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                    timeout_seconds=30,
                )  # fmt: skip
                for event in stream:
                    if event["type"] == "MODIFIED" and event["object"].get("status"):
                        writes.append(time.monotonic())
                    if stop.is_set():
                        return
            except Exception:
                time.sleep(0.5)  # the apiserver restarting

    def fault_done() -> None:
        last_fault[0] = time.monotonic()

    def active() -> Replica:
        if len(replicas) == 1:
            return replicas[0]
        try:
            lease = client.CoordinationV1Api(api_client).read_namespaced_lease(
                "kondense-operator", namespace
            )
            holder = lease.spec.holder_identity
        except Exception:
            holder = None
        return next((r for r in replicas if r.name == holder), rng.choice(replicas))

    def kill(why: str, job: str | None = None) -> None:
        with lock:
            if figures.kills_survived >= plan.kills:
                return
            target = active()
            target.kill()
            figures.kills_survived += 1
            at = time.monotonic()
            try:
                items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
                if any(
                    (c.get("status") or {}).get("phase") not in TERMINAL for c in items["items"]
                ):
                    kill_times.append(at)  # jobs in flight: the operator has work to resume
            except Exception:
                pass
            if job is not None:
                try:
                    cj = custom.get_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, job.rsplit("-g", 1)[0]
                    )
                    if (cj.get("status") or {}).get("runner", {}).get("job") != job:
                        figures.kills_between_job_and_status += 1
                except Exception:
                    pass
            log(f"kill {figures.kills_survived}: {target.name} ({why})")
        time.sleep(rng.uniform(0.2, 3.0))  # the kubelet's restart back-off, shortened
        with lock:
            target.start(current_config[0])
        fault_done()

    on_job_kills = [plan.kills_on_job_created]

    def watch_jobs() -> None:
        """Kill the active operator the moment a runner Job appears (before it can write the
        status that names it), now and then."""
        stream = watch.Watch().stream(
            batch.list_namespaced_job, namespace, timeout_seconds=int(plan.period_s)
        )
        for event in stream:
            if stop.is_set() or on_job_kills[0] <= 0:
                return
            if event["type"] == "ADDED" and rng.random() < 0.3:
                on_job_kills[0] -= 1
                threading.Thread(
                    target=kill,
                    args=("a runner Job just created", event["object"].metadata.name),
                    daemon=True,
                ).start()

    def delete_finished_pods() -> None:
        while not stop.wait(2):
            try:
                done = {
                    cj["metadata"]["uid"]
                    for cj in custom.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL
                    )["items"]
                    if (cj.get("status") or {}).get("phase") == "Succeeded"
                }
                for pod in core.list_namespaced_pod(namespace, label_selector=CHILDREN).items:
                    if (
                        pod.metadata.labels.get("kondense.dev/compressionjob-uid") in done
                        and not pod.metadata.deletion_timestamp
                    ):
                        core.delete_namespaced_pod(
                            pod.metadata.name, namespace, grace_period_seconds=0
                        )
                        figures.finished_pods_deleted += 1
            except Exception:
                pass

    names: list[tuple[str, dict[str, Any]]] = []
    for i in range(plan.jobs):
        if i < plan.real:
            name = f"real-{i:03d}"
            spec = real_spec(model, f"s3://{namespace}/out-{name}")
        elif i < plan.real + plan.legacy:
            name = f"legacy-{i:03d}"
            spec = quick_spec(name, "legacy")
        else:
            name = f"quick-{i:03d}"
            spec = quick_spec(name, "quick")
        names.append((name, spec))

    def create(name: str, spec: dict[str, Any]) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CompressionJob",
            "metadata": {"name": name},
            "spec": spec,
        }
        for _ in range(60):
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
                return
            except client.ApiException as error:
                if error.status == 409:
                    return
                time.sleep(1)  # the apiserver restarting
            except Exception:
                time.sleep(1)
        raise RuntimeError(f"could not create {name}")

    def remove_pool() -> None:
        """Restart every replica with the configuration that lacks the legacy pool, once the
        legacy jobs' runner Jobs exist (before that, losing the pool fails them rightly with
        UnknownNodePool: a different case, and kills and latency can delay the Jobs)."""
        deadline = time.monotonic() + plan.timeout_s
        while time.monotonic() < deadline and not stop.is_set():
            jobs = batch.list_namespaced_job(
                namespace, label_selector="kondense.dev/pool=legacy"
            ).items
            if len(jobs) >= plan.legacy:
                break
            time.sleep(1)
        with lock:
            current_config[0] = configs[False]
            for replica in replicas:
                replica.kill()
                replica.start(current_config[0])
        figures.config_without_pool = True
        log("operators restarted without the legacy pool")
        fault_done()

    def recreate() -> None:
        name, spec = names[-1]
        deadline = time.monotonic() + plan.period_s
        while time.monotonic() < deadline:
            try:
                cj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                if (cj.get("status") or {}).get("phase") in ("Running", *TERMINAL):
                    break
            except Exception:
                pass
            time.sleep(0.5)
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        while time.monotonic() < deadline + 60:
            try:
                custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                time.sleep(0.2)
            except client.ApiException as error:
                if error.status == 404:
                    break
        create(name, spec)
        figures.recreated += 1
        log(f"deleted and recreated {name}")
        fault_done()

    def apiserver() -> None:
        log("restarting kube-apiserver")
        down = time.monotonic()
        restart_apiserver()
        figures.apiserver_down_s = round(time.monotonic() - down, 1)
        figures.apiserver_restarts += 1
        log("kube-apiserver is back")
        fault_done()

    def toxic(index: int) -> None:
        kind, attributes, seconds = [
            ("latency", {"latency": 400, "jitter": 300}, 20.0),
            ("reset_peer", {"timeout": 500}, 5.0),
            ("timeout", {"timeout": 0}, 5.0),
        ][index % 3]
        name = f"{kind}-{index}"
        toxiproxy.add(name, kind, **attributes)
        log(f"toxic {name} {attributes} for {seconds:.0f} s")
        time.sleep(seconds)
        toxiproxy.remove(name)
        figures.toxic_windows += 1
        fault_done()

    period = plan.period_s
    schedule: list[tuple[float, Callable[[], None]]] = []
    for _ in range(plan.kills - plan.kills_on_job_created):
        schedule.append((rng.uniform(2, period), lambda: kill("at random")))
    for _ in range(plan.apiserver_restarts):
        schedule.append((rng.uniform(0.3, 0.7) * period, apiserver))
    for i in range(plan.toxics):
        schedule.append(((i + 0.5) / max(plan.toxics, 1) * period * 0.9, lambda i=i: toxic(i)))
    if plan.legacy:
        schedule.append((1.0, remove_pool))
    for _ in range(plan.delete_recreate):
        schedule.append((2.0, recreate))

    threads = [
        threading.Thread(target=watch_jobs, daemon=True),
        threading.Thread(target=watch_writes, daemon=True),
    ]
    if plan.delete_finished_pods:
        threads.append(threading.Thread(target=delete_finished_pods, daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(1)  # the watches open
    started = time.monotonic()
    # The jobs arrive through the first half of the period, a few at a time.
    waves = max(1, min(10, plan.jobs))

    def apply_waves() -> None:
        for w in range(waves):
            for name, spec in names[w::waves]:
                create(name, spec)
            time.sleep(period * 0.8 / waves)

    faults = [threading.Thread(target=apply_waves, daemon=True)]
    for at, action in sorted(schedule, key=lambda s: s[0]):

        def later(at: float = at, action: Callable[[], None] = action) -> None:
            time.sleep(max(0.0, started + at - time.monotonic()))
            try:
                action()
            except Exception as error:
                log(f"fault failed: {error!r}")

        faults.append(threading.Thread(target=later, daemon=True))
    for thread in faults:
        thread.start()
    for thread in faults:
        thread.join()
    log(f"faults done after {time.monotonic() - started:.0f} s; waiting for every job")

    expected = {name for name, _ in names}
    deadline = time.monotonic() + plan.timeout_s
    finished: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        try:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        except Exception:
            time.sleep(1)
            continue
        finished = {
            cj["metadata"]["name"]: cj["status"]
            for cj in items
            if (cj.get("status") or {}).get("phase") in TERMINAL
            and cj["status"].get("observedGeneration") == cj["metadata"].get("generation")
        }
        if expected <= finished.keys():
            break
        time.sleep(1)
    figures.all_finished_after_last_fault_s = round(max(0.0, time.monotonic() - last_fault[0]), 1)
    # Kills while jobs were in flight: how long until the operator wrote a status again.
    recoveries = sorted(
        next(w for w in writes if w > at) - at for at in kill_times if any(w > at for w in writes)
    )
    if recoveries:
        figures.time_to_recover_s = round(recoveries[-1], 1)
        figures.time_to_recover_p50_s = round(recoveries[len(recoveries) // 2], 1)
    stop.set()
    time.sleep(3)  # the watches catch up
    history.stop.set()
    figures.jobs_lost = len(expected - finished.keys())
    failed = {
        n: f"{s.get('reason')}: {s.get('message')}"
        for n, s in finished.items()
        if s.get("phase") != "Succeeded"
    }
    figures.jobs_failed = len(failed)
    duplicates = history.job_problems(namespace)
    figures.duplicate_jobs = len(duplicates)
    status_problems = [
        p for (ns, uid), statuses in history.statuses.items() if ns == namespace
        for p in _status_problems(uid, statuses)
    ]  # fmt: skip
    figures.terminal_regressions = sum(
        "became" in p or "without a reason" in p for p in status_problems
    )
    figures.vanished_results = sum("vanished" in p for p in status_problems)
    figures.problems = (
        duplicates + status_problems
        + [f"{n} lost" for n in sorted(expected - finished.keys())]
        + [f"{n} failed: {why}" for n, why in sorted(failed.items())]
    )  # fmt: skip
    for replica in replicas:
        replica.kill()
    toxiproxy.stop()
    core.delete_namespace(namespace, propagation_policy="Background")
    api_client.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=Plan.jobs)
    parser.add_argument("--kills", type=int, default=Plan.kills)
    parser.add_argument("--period", type=float, default=Plan.period_s)
    parser.add_argument("--seed", type=int, default=Plan.seed)
    parser.add_argument(
        "--timeout", type=float, default=Plan.timeout_s, help="seconds for every job to finish"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    plan = Plan(
        jobs=args.jobs,
        kills=args.kills,
        period_s=args.period,
        seed=args.seed,
        timeout_s=args.timeout,
    )
    started = time.monotonic()
    figures = run(plan)
    report = {**figures.__dict__, "wall_s": round(time.monotonic() - started, 1)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    if not figures.ok():
        sys.exit("chaos broke an invariant: " + "; ".join(figures.problems[:20]))


if __name__ == "__main__":
    main()
