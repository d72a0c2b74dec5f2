"""Operator throughput: apply N CompressionJobs at once, time apply -> runner Job created and
apply -> status Running, and read the operator's peak RSS, all from the same run.

    make bench-operator            # N=100 against the local control plane (make cluster-up)
    python bench/operator_bench.py --jobs 100 [--json out.json]

Runner pods are real pods of the runner image on the cluster's nodes, cheap on purpose (the
cpu pool's command sleeps a few seconds): this measures the operator, the control plane and
the kubelets starting pods, not the compression.
"""

from __future__ import annotations

import argparse
import json
import os
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


def start_operator(cluster: Cluster, workdir: Path, namespace: str) -> subprocess.Popen[bytes]:
    cheap = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}
    cpu = runner_pools(cluster)["cpu"]
    config = {"pools": {"cpu": {**cpu, "resources": cheap, "command": ["sleep", "5"]}}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
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
        stdout=open(workdir / "operator.log", "wb"),  # noqa: SIM115
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
    raise SystemExit("the operator did not become healthy; see " + str(workdir / "operator.log"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(config_file=str(KUBECONFIG))
    cluster = local_cluster(api_client)
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    apply_crd()
    namespace = f"kbench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    wait_default_service_account(cluster, namespace)
    pulled = pull_runner_image(cluster, namespace)
    print(f"the runner image is on every node after {pulled:.0f} s", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="kondense-bench-"))
    operator = start_operator(cluster, workdir, namespace)
    applied: dict[str, float] = {}
    job_seen: dict[str, float] = {}
    running: dict[str, float] = {}
    names = [f"bench-{i:03d}" for i in range(args.jobs)]
    done = threading.Event()

    def watch_jobs() -> None:
        for event in watch.Watch().stream(
            batch.list_namespaced_job, namespace, timeout_seconds=int(args.timeout)
        ):
            owner = event["object"].metadata.annotations.get("kondense.dev/compressionjob")
            job_seen.setdefault(owner, time.monotonic())
            if done.is_set():
                return

    def watch_phases() -> None:
        for event in watch.Watch().stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
            timeout_seconds=int(args.timeout),
        ):  # fmt: skip
            body = event["object"]
            if (body.get("status") or {}).get("phase") in ("Running", "Succeeded"):
                running.setdefault(body["metadata"]["name"], time.monotonic())
            if len(running) == len(names):
                done.set()
                return

    watchers = [threading.Thread(target=f, daemon=True) for f in (watch_jobs, watch_phases)]
    for thread in watchers:
        thread.start()
    time.sleep(1)  # let both watches open before the first object appears

    def create(name: str) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CompressionJob",
            "metadata": {"name": name},
            "spec": {
                "model": {"uri": "s3://bench/model.onnx"},
                "steps": [{"quantize": {"mode": "dynamic"}}],
                "output": {"uri": f"s3://bench/out/{name}"},
            },
        }
        applied[name] = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    cpu_before = cpu_seconds(operator.pid)
    started = time.monotonic()
    # "At once": 16 concurrent clients, like `kubectl apply -f` of a directory in parallel.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, names))
    apply_seconds = time.monotonic() - started
    done.wait(args.timeout)
    rss = peak_rss_mib(operator.pid)
    cpu = cpu_seconds(operator.pid) - cpu_before
    os.killpg(operator.pid, signal.SIGKILL)
    operator.wait()
    core.delete_namespace(namespace, propagation_policy="Background")

    to_job = [job_seen[n] - applied[n] for n in names if n in job_seen]
    to_running = [running[n] - applied[n] for n in names if n in running]
    figures: dict[str, Any] = {
        "jobs": args.jobs,
        "apply_all_seconds": round(apply_seconds, 2),
        "runner_jobs_created": len(to_job),
        "reached_running": len(to_running),
        "apply_to_job_p50_s": round(statistics.median(to_job), 3) if to_job else None,
        "apply_to_job_p99_s": round(percentile(to_job, 99), 3) if to_job else None,
        "apply_to_running_p50_s": round(statistics.median(to_running), 3) if to_running else None,
        "apply_to_running_p99_s": round(percentile(to_running, 99), 3) if to_running else None,
        "operator_peak_rss_mib": round(rss, 1),
        "operator_cpu_seconds": round(cpu, 1),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if len(to_running) != args.jobs:
        sys.exit(f"only {len(to_running)} of {args.jobs} jobs reached Running; see {workdir}")


if __name__ == "__main__":
    main()
