"""Operator throughput: apply N CompressionJobs at once, time apply -> runner Job created and
apply -> status Running, and read the operator's peak RSS, beside the floor the apiserver sets
under the same load, all in one run.

    make bench-operator            # N=100 against the local control plane (make cluster-up)
    python bench/operator_bench.py --jobs 100 [--json out.json]

Three phases, each in its own namespace, each applying N jobs from 16 concurrent clients:

- client: no operator; the benchmark creates each runner Job itself (the operator's own
  manifest) right after the CompressionJob. What no operator can beat on this machine.
- operator, pods held: the operator creates the Jobs; their pods stay unschedulable, so the
  operator and the control plane have the CPUs to themselves (as on a cluster whose nodes
  are other machines).
- operator: the runner pods start on the local nodes (cheap on purpose: the pool's command
  sleeps a few seconds), so the kubelets and containerd share the CPUs with the control
  plane and the operator. This measures the operator, the control plane and the kubelets
  starting pods, not the compression.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
KUBECONFIG = REPO / ".cluster" / "kubeconfig"
sys.path.insert(0, str(REPO / "tests"))

from fixtures.cluster import Cluster, wait_default_service_account  # noqa: E402
from fixtures.operator_cluster import (  # noqa: E402
    GROUP,
    PLURAL,
    VERSION,
    apply_crd,
    local_cluster,
    pull_runner_image,
    runner_pools,
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


HELD = {"kondense.dev/pool": "nowhere"}  # no node has it: the runner pods stay Pending


def pool_config(cluster: Cluster, held: bool) -> dict[str, Any]:
    cheap = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}
    cpu = {**runner_pools(cluster)["cpu"], "resources": cheap, "command": ["sleep", "5"]}
    if held:
        cpu["nodeSelector"] = HELD
    return {"pools": {"cpu": cpu}}


def start_operator(workdir: Path, namespace: str) -> subprocess.Popen[bytes]:
    health = 18000 + os.getpid() % 1000
    process = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "kondense-operator"),
            f"--config={workdir / 'config.yaml'}",
            f"--namespace={namespace}",
            f"--metrics-port={health + 1}",
            f"--health-port={health}",
            "--log-level=warning",
        ],
        env=dict(os.environ, KUBECONFIG=str(KUBECONFIG)),
        stdout=open(workdir / f"operator-{namespace}.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the operator did not become healthy; see " + str(workdir))


def job_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CompressionJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "s3://bench/model.onnx"},
            "steps": [{"quantize": {"mode": "dynamic"}}],
            "output": {"uri": f"s3://bench/out/{name}"},
        },
    }


def run_phase(
    api_client: Any, cluster: Cluster, workdir: Path, phase: str, jobs: int, timeout: float
) -> dict[str, Any]:
    """Apply `jobs` CompressionJobs at once in a fresh namespace and time them (see the
    module's docstring for the phases)."""
    from concurrent.futures import ThreadPoolExecutor

    from kubernetes import client, watch

    from kondense.operator.config import parse_config
    from kondense.operator.jobs import build_runner_job
    from kondense.operator.reconcile import parse_spec

    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    namespace = f"kbench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    wait_default_service_account(cluster, namespace)
    document = pool_config(cluster, held=phase != "operator")
    (workdir / "config.yaml").write_text(yaml.safe_dump(document))
    config = parse_config(document, "config.yaml", workdir)
    operator = None if phase == "client" else start_operator(workdir, namespace)
    applied: dict[str, float] = {}
    job_seen: dict[str, float] = {}
    running: dict[str, float] = {}
    names = [f"bench-{i:03d}" for i in range(jobs)]
    done = threading.Event()
    wait_for_running = phase == "operator"

    def watch_jobs() -> None:
        # Plain JSON, not the client's models: parsing those for every MODIFIED event (each
        # pod start updates its Job) lags this thread, and the lag would count as latency.
        for event in watch.Watch().stream(
            batch.list_namespaced_job,
            namespace,
            timeout_seconds=int(timeout),
            deserialize=False,
        ):
            owner = event["object"]["metadata"]["annotations"].get("kondense.dev/compressionjob")
            job_seen.setdefault(owner, time.monotonic())
            if not wait_for_running and len(job_seen) == jobs:
                done.set()
            if done.is_set():
                return

    def watch_phases() -> None:
        for event in watch.Watch().stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
            timeout_seconds=int(timeout), deserialize=False,
        ):  # fmt: skip
            body = event["object"]
            if (body.get("status") or {}).get("phase") in ("Running", "Succeeded"):
                running.setdefault(body["metadata"]["name"], time.monotonic())
            if len(running) == len(names):
                done.set()
            if done.is_set():
                return

    watchers = [threading.Thread(target=watch_jobs, daemon=True)]
    if wait_for_running:
        watchers.append(threading.Thread(target=watch_phases, daemon=True))
    for thread in watchers:
        thread.start()
    time.sleep(1)  # let the watches open before the first object appears

    def create(name: str) -> None:
        applied[name] = time.monotonic()
        cj = custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, job_body(name)
        )
        if operator is None:  # what the operator's first reconcile does, less the status
            spec = parse_spec(cj)
            assert not isinstance(spec, str), spec
            meta = cj["metadata"]
            manifest = build_runner_job(meta, spec, "cpu", config.pools["cpu"], created=0.0)
            batch.create_namespaced_job(namespace, manifest)

    cpu_before = cpu_seconds(operator.pid) if operator else 0.0
    started = time.monotonic()
    # "At once": 16 concurrent clients, like `kubectl apply -f` of a directory in parallel.
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, names))
    apply_seconds = time.monotonic() - started
    done.wait(timeout)
    figures: dict[str, Any] = {"phase": phase, "apply_all_s": round(apply_seconds, 2)}
    if operator is not None:
        figures["operator_peak_rss_mib"] = round(peak_rss_mib(operator.pid), 1)
        figures["operator_cpu_s"] = round(cpu_seconds(operator.pid) - cpu_before, 1)
        os.killpg(operator.pid, signal.SIGKILL)
        operator.wait()
    figures["load_average_1m"] = round(os.getloadavg()[0], 1)
    for label, seen in (("job", job_seen), ("running", running)):
        delays = [seen[n] - applied[n] for n in names if n in seen]
        if delays:
            figures[f"apply_to_{label}_count"] = len(delays)
            figures[f"apply_to_{label}_p50_s"] = round(statistics.median(delays), 3)
            figures[f"apply_to_{label}_p99_s"] = round(percentile(delays, 99), 3)
    core.delete_namespace(namespace, propagation_policy="Background")
    wait_namespace_gone(core, namespace, timeout=180)
    return figures


def wait_namespace_gone(core: Any, namespace: str, timeout: float) -> None:
    """So that one phase's clean-up does not load the next."""
    from kubernetes.client.rest import ApiException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(namespace)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(1)  # a namespace's deletion has no condition to wait on


def cpu_flags() -> str:
    """The CPU's model and the instruction sets that matter to the figures' machine."""
    text = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), "?")  # fmt: skip
    return f"{model}, {os.cpu_count()} CPUs"


def table(rows: list[dict[str, Any]]) -> str:
    columns = [
        ("phase", "phase"),
        ("apply_to_job_p50_s", "apply->Job p50"),
        ("apply_to_job_p99_s", "p99"),
        ("apply_to_running_p50_s", "apply->Running p50"),
        ("apply_to_running_p99_s", "p99"),
        ("operator_peak_rss_mib", "operator RSS MiB"),
        ("operator_cpu_s", "operator CPU s"),
        ("load_average_1m", "load 1m"),
    ]
    lines = [" | ".join(title for _, title in columns)]
    for row in rows:
        lines.append(" | ".join(str(row.get(key, "-")) for key, _ in columns))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(KUBECONFIG))
    cluster = local_cluster(api_client)
    apply_crd()
    namespace = f"kbench-pull-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": namespace}})
    wait_default_service_account(cluster, namespace)
    pulled = pull_runner_image(cluster, namespace)
    core.delete_namespace(namespace)
    print(f"the runner image is on every node after {pulled:.0f} s", file=sys.stderr)
    print(cpu_flags(), file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="kondense-bench-"))
    rows = []
    for phase in ("client", "operator, pods held", "operator"):
        rows.append(run_phase(api_client, cluster, workdir, phase, args.jobs, args.timeout))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"{args.jobs} CompressionJobs applied at once (16 clients):")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"jobs": args.jobs, "phases": rows}, indent=2) + "\n")
    short = [row["phase"] for row in rows if row.get("apply_to_job_count") != args.jobs]
    if rows[-1].get("apply_to_running_count") != args.jobs:
        short.append("operator (Running)")
    if short:
        sys.exit(f"not every job got there in: {', '.join(short)}; see {workdir}")
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
