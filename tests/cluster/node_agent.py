"""A small stand-in for the kubelet: fake GPU/CPU nodes whose pods run as local processes.

    python node_agent.py --nodes nodes.json [--kubeconfig .cluster/kubeconfig]

Started by `make cluster-up`; test infrastructure, not part of kondense.

Nodes. Each entry of the nodes file (name, labels, capacity, taints) becomes a Node that
stays Ready: the agent renews its Lease in kube-node-lease every 10 s and refreshes the
Ready condition. Stop the agent and the node-lifecycle controller marks them NotReady.

Pods. Every pod the scheduler binds to one of these nodes runs on this machine:
- Images are not pulled. `image` is recorded in the status, but the process runs from the
  local environment: `command` + `args` (the image entrypoint is unknown, so `command` is
  required), with `<repo>/.venv/bin` first on PATH, so `[kondense, run, ...]` or
  `[python, -c, ...]` runs the project's virtual environment.
- `env` (value, fieldRef, resourceFieldRef, secretKeyRef, configMapKeyRef), `envFrom`,
  `$(VAR)` expansion, `workingDir` (default: the pod's scratch dir under .cluster/pods/).
  The usual in-cluster variables point at the local apiserver (KUBERNETES_SERVICE_HOST is
  127.0.0.1), so in-cluster clients work. Pods share the host network; podIP is 127.0.0.1.
- Volumes emptyDir, configMap, secret, downwardAPI, projected (serviceAccountToken through
  the TokenRequest API, bound to the pod; configMap; secret; downwardAPI), hostPath and
  persistentVolumeClaim (a PV with hostPath or local path; claims of the default
  StorageClass `standard` are provisioned by the agent as directories under
  .cluster/volumes/ and removed with the claim) are materialised under
  .cluster/pods/<uid>/ and bind-mounted at their mountPath (subPath, readOnly honoured) in a
  private mount namespace per container (see pod_launch.py): the host file system is not
  changed, except that a mountPath that does not exist on the host is created as an empty
  placeholder for the lifetime of the pod and removed afterwards.
- Init containers run in order before the app containers. restartPolicy Never/OnFailure/
  Always is honoured with a short back-off. Logs: .cluster/pods/<uid>/<container>.log
  (`kubectl logs` is not served).
- Status: phase, conditions, container states with exit codes and reasons, and the
  termination message read from terminationMessagePath (FallbackToLogsOnError honoured).
- Deletion: SIGTERM to the container's process group, SIGKILL after the grace period, then
  the pod object is removed like the kubelet does.
- Security context: runAsUser/runAsNonRoot/readOnlyRootFilesystem and capabilities are
  accepted and recorded but not enforced; processes run as the agent's user (root), because
  the project's interpreter may live under a directory only root can read.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import logging
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LAUNCHER = HERE / "pod_launch.py"
# Kept visible in every container even under a volume mounted over a parent directory:
# the repository, the virtual environment and the interpreter it is made from.
PRESERVE = sorted(
    {str(REPO), str((REPO / ".venv").resolve()), os.path.realpath(sys.base_prefix)} - {"/"}
)
LEASE_SECONDS = 40
HEARTBEAT_S = 10
# A pod's status report is retried this long (about 5 minutes) while the apiserver is away.
REPORT_RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 15, 30, 30, 30, 30, 30, 30, 30, 30, 30)
KUBELET_VERSION = "v1.34.4"
STORAGE_CLASS = "standard"  # the default class; its claims get a directory under .cluster/
PROVISIONER = "kondense.dev/local-dir"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host variables a container inherits: locale, and caches/offline switches the tests rely on.
INHERITED_ENV = re.compile(r"^(LANG|LC_\w+|TZ|HOME|HF_\w+|TRANSFORMERS_\w+|TORCH_\w+|XDG_\w+)$")

log = logging.getLogger("node-agent")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def now_micro() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body[:300]}")
        self.status = status


class Api:
    """Minimal JSON client for the apiserver, configured from the admin kubeconfig."""

    def __init__(self, kubeconfig: Path):
        config = json.loads(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        url = urllib.parse.urlparse(cluster["server"])
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.token = config["users"][0]["user"]["token"]
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self.ssl = ssl.create_default_context(cadata=ca)

    def _conn(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ssl, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        conn = self._conn(30)
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode()
            if resp.status >= 400:
                raise ApiError(resp.status, text)
            return json.loads(text) if text else None
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def watch(self, path: str, resource_version: str):
        """Yield watch events until the server closes the stream (timeoutSeconds)."""
        sep = "&" if "?" in path else "?"
        q = f"{sep}watch=1&allowWatchBookmarks=true&timeoutSeconds=300"
        conn = self._conn(330)
        try:
            conn.request(
                "GET",
                f"{path}{q}&resourceVersion={resource_version}",
                headers={"Authorization": f"Bearer {self.token}"},
            )
            resp = conn.getresponse()
            if resp.status >= 400:
                raise ApiError(resp.status, resp.read().decode())
            while line := resp.readline():
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


def parse_quantity(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    units |= {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    units |= {"P": 1e15, "E": 1e18}
    m = re.fullmatch(r"([0-9.eE+-]+?)([a-zA-Z]*)", str(q).strip())
    if not m:
        raise ValueError(f"bad quantity {q!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


class Placeholders:
    """Mount targets created on the host for running pods, removed when the last user ends."""

    def __init__(self, record: Path) -> None:
        self.lock = threading.Lock()
        self.users: dict[Path, int] = {}
        self.record = record  # read by `make cluster-down` if this agent dies

    def _save(self) -> None:
        self.record.write_text("".join(f"{p}\n" for p in self.users))

    def acquire(self, target: Path, is_file: bool) -> list[Path]:
        """Create what is missing of target's path; return the placeholders it now holds."""
        with self.lock:
            missing = []
            p = target
            while not os.path.lexists(p):
                missing.append(p)
                p = p.parent
            for path in reversed(missing):
                path.touch() if is_file and path == target else path.mkdir()
                self.users[path] = 0
            held = [p for p in [target, *target.parents] if p in self.users]
            for p in held:
                self.users[p] += 1
            self._save()
            return held

    def release(self, paths: list[Path]) -> None:
        with self.lock:
            # Deepest first, so a directory is empty by the time it is removed.
            for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
                self.users[path] -= 1
                if self.users[path] == 0:
                    del self.users[path]
                    try:
                        path.rmdir() if path.is_dir() else path.unlink()
                    except OSError as exc:
                        log.warning("could not remove placeholder %s: %s", path, exc)
            self._save()


class Container:
    def __init__(self, spec: dict, init: bool):
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.started_at = ""

    def status(self) -> dict:
        running = "running" in self.state
        status = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"local://{self.proc.pid}" if self.proc else "",
            "ready": running and not self.init,
            "started": running,
            "restartCount": self.restarts,
            "state": self.state,
            "lastState": self.last_state,
        }
        return status


class PodWorker(threading.Thread):
    """Runs one pod from binding to deletion."""

    def __init__(self, agent: NodeAgent, pod: dict):
        super().__init__(name=f"pod-{pod['metadata']['name']}", daemon=True)
        self.agent = agent
        self.api = agent.api
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.pod_name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.path = f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}"
        self.dir = agent.state_dir / "pods" / self.uid
        spec = pod["spec"]
        self.init_containers = [Container(c, True) for c in spec.get("initContainers", [])]
        self.containers = [Container(c, False) for c in spec["containers"]]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.stopping = threading.Event()
        self.deleted = threading.Event()
        self.grace = 30.0
        self.lock = threading.Lock()
        self.report_lock = threading.Lock()
        self.placeholders: list[Path] = []
        self.phase = "Pending"
        self.message = ""
        self.reason = ""
        self.start_time = now()
        self.initialized = not self.init_containers

    # --- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a broken pod must not take the agent down
            log.exception("pod %s/%s failed in the agent", self.ns, self.pod_name)
            self.phase, self.reason, self.message = "Failed", "NodeAgentError", str(exc)
            for c in self.init_containers + self.containers:
                if "terminated" not in c.state:
                    c.state = {"terminated": {"exitCode": 128, "reason": "StartError"}}
            self.report()
        finally:
            self.agent.placeholders.release(self.placeholders)
            self.placeholders = []
        self.deleted.wait()
        self.finish_deletion()

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.report()
        volumes = self.prepare_volumes_until_ready()
        if volumes is None:
            return
        for c in self.init_containers:
            if not self.run_to_completion(c, volumes):
                self.finalise()  # stopped, or failed under restartPolicy Never
                return
        self.initialized = True
        threads = [
            threading.Thread(target=self.run_to_completion, args=(c, volumes), daemon=True)
            for c in self.containers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.finalise()

    def finalise(self) -> None:
        codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in self.containers]
        failed_init = any(
            c.state.get("terminated", {}).get("exitCode", 0) != 0 for c in self.init_containers
        )
        ok = not failed_init and all(code == 0 for code in codes) and not self.stopping.is_set()
        self.phase = "Succeeded" if ok else "Failed"
        for c in self.containers:
            if "terminated" not in c.state:
                c.state = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown"}}
        self.report()
        log.info("pod %s/%s %s", self.ns, self.pod_name, self.phase)

    def stop(self, grace: float) -> None:
        """Called on deletion: stop the containers and let the worker remove the pod."""
        if self.deleted.is_set():
            return
        self.grace = grace
        self.stopping.set()
        self.deleted.set()
        threading.Thread(target=self.kill_all, daemon=True).start()

    def kill_all(self) -> None:
        terminate(self.processes(), self.grace)

    def processes(self) -> list[subprocess.Popen]:
        # run_once starts a process and records it under this lock after checking `stopping`:
        # reading under it sees every process that started before `stopping` was set.
        with self.lock:
            return [c.proc for c in self.init_containers + self.containers if c.proc]

    def finish_deletion(self) -> None:
        for c in self.init_containers + self.containers:
            if c.proc and c.proc.poll() is None:
                c.proc.wait()
        self.agent.remove_finished(self.pod)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.agent.forget(self.uid)

    # --- containers ------------------------------------------------------------------------

    def run_to_completion(self, c: Container, volumes: dict[str, Path]) -> bool:
        """Run a container, restarting it as restartPolicy says; True if it ended with 0."""
        backoff = 1.0
        while not self.stopping.is_set():
            code = self.run_once(c, volumes)
            if code == 0 and (c.init or self.restart_policy != "Always"):
                return True
            if self.restart_policy == "Never" or self.stopping.is_set():
                return False
            c.last_state, c.restarts = c.state, c.restarts + 1
            c.state = {"waiting": {"reason": "CrashLoopBackOff"}}
            self.report()
            if self.stopping.wait(backoff):
                return False
            backoff = min(backoff * 2, 30.0)
        return False

    def run_once(self, c: Container, volumes: dict[str, Path]) -> int:
        cdir = self.dir / "containers" / c.name
        cdir.mkdir(parents=True, exist_ok=True)
        term_log = cdir / "termination-log"
        term_log.write_text("")
        log_path = self.dir / f"{c.name}.log"
        try:
            env = self.container_env(c.spec)
            argv = [expand(a, env) for a in c.spec.get("command", []) + c.spec.get("args", [])]
            if not c.spec.get("command"):
                raise ValueError(
                    f"container {c.name!r} has no command: images are not pulled, so the "
                    "node agent cannot know the image's entrypoint"
                )
            mounts = self.container_mounts(c.spec, volumes, term_log)
        except Exception as exc:  # a config the agent cannot honour fails this container only
            c.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "CreateContainerConfigError",
                    "message": str(exc),
                    "startedAt": now(),
                    "finishedAt": now(),
                }
            }
            self.report()
            return 128
        work = self.dir / "work"
        work.mkdir(exist_ok=True)
        spec_file = cdir / "launch.json"
        spec_file.write_text(
            json.dumps(
                {
                    "argv": argv,
                    "env": env,
                    "workingDir": c.spec.get("workingDir") or str(work),
                    "mounts": mounts,
                    "preserve": PRESERVE,
                }
            )
        )
        with self.lock:
            if self.stopping.is_set():
                return 137
            with open(log_path, "ab") as out:
                c.proc = subprocess.Popen(
                    [sys.executable, str(LAUNCHER), str(spec_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
        c.started_at = now()
        # Lets `make cluster-down` stop it even if this agent died (see controlplane.py).
        (cdir / "pid").write_text(f"{c.proc.pid} {process_start_time(c.proc.pid)}\n")
        c.state = {"running": {"startedAt": c.started_at}}
        if not c.init:
            self.phase = "Running"
        self.report()
        code = c.proc.wait()
        if code < 0:  # killed by a signal: report it the way container runtimes do
            code = 128 - code
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": now(),
            "containerID": f"local://{c.proc.pid}",
        }
        message = term_log.read_bytes()[:4096].decode(errors="replace")
        policy = c.spec.get("terminationMessagePolicy", "File")
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            lines = log_path.read_bytes()[-2048:].decode(errors="replace").splitlines()
            message = "\n".join(lines[-80:])
        if message:
            terminated["message"] = message
        c.state = {"terminated": terminated}
        self.report()
        return code

    def container_mounts(self, spec: dict, volumes: dict[str, Path], term_log: Path) -> list:
        mounts = []
        for vm in spec.get("volumeMounts", []):
            if vm["name"] not in volumes:
                raise ValueError(f"volumeMount {vm['name']!r} names no volume of the pod")
            source = volumes[vm["name"]]
            if vm.get("subPath"):
                source = source / vm["subPath"]
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append((source, Path(vm["mountPath"]), bool(vm.get("readOnly"))))
        term_path = spec.get("terminationMessagePath", "/dev/termination-log")
        mounts.append((term_log, Path(term_path), False))
        result = []
        for source, target, read_only in mounts:
            self.placeholders += self.agent.placeholders.acquire(target, source.is_file())
            result.append({"source": str(source), "target": str(target), "readOnly": read_only})
        return result

    # --- environment -----------------------------------------------------------------------

    def container_env(self, spec: dict) -> dict[str, str]:
        port = str(self.api.port)
        env = {k: v for k, v in os.environ.items() if INHERITED_ENV.match(k)}
        env |= {
            "PATH": SYSTEM_PATH,
            "HOSTNAME": self.pod_name,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
        }
        for source in spec.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref, data = source["configMapRef"], self.config_map_data
            else:
                ref, data = source["secretRef"], self.secret_data
            values = data(ref["name"], optional=bool(ref.get("optional")))
            env |= {prefix + k: v.decode(errors="replace") for k, v in values.items()}
        for var in spec.get("env", []):
            if "valueFrom" in var:
                value = self.env_value_from(var["valueFrom"], spec)
                if value is None:
                    continue
            else:
                value = expand(var.get("value", ""), env)
            env[var["name"]] = value
        env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env['PATH']}"
        return env

    def env_value_from(self, source: dict, spec: dict) -> str | None:
        if "fieldRef" in source:
            return self.field_value(source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return self.resource_value(source["resourceFieldRef"], spec)
        if "secretKeyRef" in source:
            ref, data = source["secretKeyRef"], self.secret_data
        else:
            ref, data = source["configMapKeyRef"], self.config_map_data
        values = data(ref["name"], optional=bool(ref.get("optional")))
        if ref["key"] not in values:
            if ref.get("optional"):
                return None
            raise ValueError(f"key {ref['key']!r} not found in {ref['name']!r}")
        return values[ref["key"]].decode(errors="replace")

    def field_value(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str(meta.get(m.group(1), {}).get(m.group(2), ""))
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
            "status.podIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        if path in ("metadata.labels", "metadata.annotations"):
            items = meta.get(path.split(".")[1], {})
            return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
        raise ValueError(f"unsupported fieldPath {path!r}")

    def resource_value(self, ref: dict, spec: dict) -> str:
        if ref.get("containerName"):
            spec = next(
                c
                for c in self.pod["spec"]["containers"] + self.pod["spec"].get("initContainers", [])
                if c["name"] == ref["containerName"]
            )
        kind, _, resource = ref["resource"].partition(".")
        resources = spec.get("resources", {})
        value = resources.get(kind, {}).get(resource) or self.agent.allocatable(
            self.pod["spec"]["nodeName"], resource
        )
        divisor = parse_quantity(ref.get("divisor") or "1") or 1.0  # the API defaults it to 0
        return str(math.ceil(parse_quantity(value) / divisor))

    def config_map_data(self, name: str, optional: bool = False) -> dict[str, bytes]:
        try:
            cm = self.api.get(f"/api/v1/namespaces/{self.ns}/configmaps/{name}")
        except ApiError as exc:
            if exc.status == 404 and optional:
                return {}
            raise
        data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        data |= {k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()}
        return data

    def secret_data(self, name: str, optional: bool = False) -> dict[str, bytes]:
        try:
            secret = self.api.get(f"/api/v1/namespaces/{self.ns}/secrets/{name}")
        except ApiError as exc:
            if exc.status == 404 and optional:
                return {}
            raise
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    # --- volumes ---------------------------------------------------------------------------

    def prepare_volumes_until_ready(self) -> dict[str, Path] | None:
        """Materialise the volumes, retrying while a referenced object is missing."""
        while True:
            try:
                return self.prepare_volumes()
            except (ApiError, ValueError, KeyError) as exc:
                for c in self.init_containers + self.containers:
                    c.state = {
                        "waiting": {"reason": "ContainerCreating", "message": f"volumes: {exc}"}
                    }
                self.report()
                if self.stopping.wait(2.0):
                    return None

    def prepare_volumes(self) -> dict[str, Path]:
        volumes: dict[str, Path] = {}
        for vol in self.pod["spec"].get("volumes", []):
            name = vol["name"]
            target = self.dir / "volumes" / name
            if "hostPath" in vol:
                path = Path(vol["hostPath"]["path"])
                if vol["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                    path.mkdir(parents=True, exist_ok=True)
                volumes[name] = path
                continue
            if "persistentVolumeClaim" in vol:
                volumes[name] = self.claim_path(vol["persistentVolumeClaim"]["claimName"])
                continue
            if target.exists():  # prepared on an earlier attempt
                volumes[name] = target
                continue
            staging = self.dir / "volumes" / f".{name}.staging"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            if "emptyDir" in vol:
                pass
            elif "configMap" in vol:
                src = vol["configMap"]
                data = self.config_map_data(src["name"], bool(src.get("optional")))
                write_items(staging, data, src.get("items"), src.get("defaultMode", 0o644))
            elif "secret" in vol:
                src = vol["secret"]
                data = self.secret_data(src["secretName"], bool(src.get("optional")))
                write_items(staging, data, src.get("items"), src.get("defaultMode", 0o644))
            elif "downwardAPI" in vol:
                self.write_downward(staging, vol["downwardAPI"].get("items", []), 0o644)
            elif "projected" in vol:
                mode = vol["projected"].get("defaultMode", 0o644)
                for source in vol["projected"].get("sources", []):
                    self.write_projection(staging, source, mode)
            else:
                kinds = sorted(set(vol) - {"name"})
                raise ValueError(f"volume {name!r}: type {kinds} is not supported by the agent")
            staging.rename(target)
            volumes[name] = target
        return volumes

    def write_projection(self, dest: Path, source: dict, mode: int) -> None:
        if "serviceAccountToken" in source:
            src = source["serviceAccountToken"]
            sa = self.pod["spec"].get("serviceAccountName", "default")
            spec: dict[str, Any] = {
                "expirationSeconds": src.get("expirationSeconds", 3600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod_name,
                    "uid": self.uid,
                },
            }
            if src.get("audience"):
                spec["audiences"] = [src["audience"]]
            tr = self.api.request(
                "POST",
                f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            )
            write_file(dest / src["path"], tr["status"]["token"].encode(), mode)
        elif "configMap" in source:
            src = source["configMap"]
            data = self.config_map_data(src["name"], bool(src.get("optional")))
            write_items(dest, data, src.get("items"), mode)
        elif "secret" in source:
            src = source["secret"]
            data = self.secret_data(src["name"], bool(src.get("optional")))
            write_items(dest, data, src.get("items"), mode)
        elif "downwardAPI" in source:
            self.write_downward(dest, source["downwardAPI"].get("items", []), mode)
        else:
            raise ValueError(f"projected source {sorted(source)} is not supported by the agent")

    def write_downward(self, dest: Path, items: list[dict], mode: int) -> None:
        for item in items:
            if "fieldRef" in item:
                value = self.field_value(item["fieldRef"]["fieldPath"])
            else:
                value = self.resource_value(item["resourceFieldRef"], self.containers[0].spec)
            write_file(dest / item["path"], value.encode(), item.get("mode", mode))

    def claim_path(self, claim: str) -> Path:
        pvc = self.api.get(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{claim}")
        pv_name = pvc["spec"].get("volumeName")
        if not pv_name:
            raise ValueError(f"persistentVolumeClaim {claim!r} is not bound")
        pv = self.api.get(f"/api/v1/persistentvolumes/{pv_name}")
        for kind in ("hostPath", "local"):
            if kind in pv["spec"]:
                path = Path(pv["spec"][kind]["path"])
                path.mkdir(parents=True, exist_ok=True)
                return path
        raise ValueError(f"persistentVolume {pv_name!r} is neither hostPath nor local")

    # --- status ----------------------------------------------------------------------------

    def report(self) -> None:
        # One report at a time, each computed from the state at send time: the last wins.
        # Retried while the apiserver is away (a restart), as a kubelet does: a lost report
        # of a finished pod would leave it Running for good.
        with self.report_lock:
            for delay in REPORT_RETRY_DELAYS_S:
                try:
                    self._report()
                    return
                except (OSError, ApiError) as exc:
                    log.warning("status of %s/%s, again in %s s: %s", self.ns, self.pod_name,
                                delay, exc)  # fmt: skip
                    time.sleep(delay)
            self._report()

    def _report(self) -> None:
        main_ready = all("running" in c.state for c in self.containers)
        ready = "True" if self.phase == "Running" and main_ready else "False"
        t = now()
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
            {
                "type": "Initialized",
                "status": "True" if self.initialized else "False",
                "lastTransitionTime": t,
            },
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": t},
            {"type": "Ready", "status": ready, "lastTransitionTime": t},
        ]
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.containers],
            "qosClass": self.pod.get("status", {}).get("qosClass", "BestEffort"),
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.reason:
            status["reason"], status["message"] = self.reason, self.message
        try:
            self.api.request(
                "PATCH",
                f"{self.path}/status",
                {"metadata": {"uid": self.uid}, "status": status},
                "application/strategic-merge-patch+json",
            )
        except ApiError as exc:
            if exc.status >= 500 or exc.status == 429:
                raise  # the apiserver is starting or shedding load: report() tries again
            if exc.status != 404:
                log.warning("status of %s/%s: %s", self.ns, self.pod_name, exc)


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known variables are replaced, $$ escapes."""

    def sub(m: re.Match) -> str:
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$\(?|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def write_items(dest: Path, data: dict[str, bytes], items: list | None, mode: int) -> None:
    if items is None:
        items = [{"key": k, "path": k} for k in data]
    for item in items:
        if item["key"] not in data:
            raise ValueError(f"key {item['key']!r} not found")
        write_file(dest / item["path"], data[item["key"]], item.get("mode", mode))


def process_start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def terminate(procs: list[subprocess.Popen], grace: float) -> None:
    """What a kubelet does to a pod's containers: SIGTERM, then SIGKILL after `grace` seconds
    to each whole process group (children that outlive their parent included)."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
    for p in live:
        signal_group(p, signal.SIGKILL)


class NodeAgent:
    def __init__(self, api: Api, nodes: list[dict], state_dir: Path):
        self.api = api
        self.nodes = {n["name"]: n for n in nodes}
        self.state_dir = state_dir
        self.workers: dict[str, PodWorker] = {}
        self.workers_lock = threading.Lock()
        self.placeholders = Placeholders(state_dir / "placeholders")
        self.stopped = threading.Event()

    def allocatable(self, node: str, resource: str) -> str:
        return str(self.nodes[node]["capacity"].get(resource, "0"))

    # --- nodes -----------------------------------------------------------------------------

    def node_status(self, node: dict) -> dict:
        t = now()
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kondense node agent is posting ready status",
            "lastHeartbeatTime": t,
            "lastTransitionTime": t,
        }
        conditions = [ready]
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            conditions.append(
                {
                    "type": kind,
                    "status": "False",
                    "reason": f"KubeletHasNo{kind}",
                    "lastHeartbeatTime": t,
                    "lastTransitionTime": t,
                }
            )
        return {
            "capacity": node["capacity"],
            "allocatable": node.get("allocatable", node["capacity"]),
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node["name"]},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": node["name"],
                "systemUUID": node["name"],
                "bootID": str(os.getpid()),
                "kernelVersion": os.uname().release,
                "osImage": "kondense node agent (pods run as local processes)",
                "containerRuntimeVersion": "local://processes",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self, node: dict) -> None:
        name = node["name"]
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **node.get("labels", {}),
        }
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": node.get("taints", [])},
        }
        try:
            self.api.request("POST", "/api/v1/nodes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            self.api.patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": labels}})
        self.api.request(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            {"status": self.node_status(node)},
            "application/strategic-merge-patch+json",
        )
        log.info("node %s registered", name)

    def renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now_micro(),
        }
        try:
            self.api.patch(path, {"spec": spec})
        except ApiError as exc:
            if exc.status != 404:
                raise
            node = self.api.get(f"/api/v1/nodes/{name}")
            owner = {"apiVersion": "v1", "kind": "Node", "name": name}
            owner["uid"] = node["metadata"]["uid"]
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "ownerReferences": [owner]},
                "spec": spec,
            }
            self.api.request(
                "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body
            )

    def heartbeat(self) -> None:
        beats = 0
        while not self.stopped.is_set():
            for node in self.nodes.values():
                try:
                    self.renew_lease(node["name"])
                    if beats % 6 == 5:  # once a minute: Ready again; re-create if deleted
                        self.register(node)
                except (ApiError, OSError) as exc:
                    log.warning("heartbeat for %s: %s", node["name"], exc)
            beats += 1
            self.stopped.wait(HEARTBEAT_S)

    # --- volumes ---------------------------------------------------------------------------

    def ensure_storage_class(self) -> None:
        body = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        try:
            self.api.request("POST", "/apis/storage.k8s.io/v1/storageclasses", body)
        except ApiError as exc:
            if exc.status != 409:
                raise

    def provision(self) -> None:
        """Back claims of the default class with directories under .cluster/volumes/."""
        while not self.stopped.is_set():
            try:
                self.reconcile_volumes()
            except (ApiError, OSError, KeyError) as exc:
                log.warning("provisioner: %s", exc)
            self.stopped.wait(1)

    def reconcile_volumes(self) -> None:
        claims = self.api.get("/api/v1/persistentvolumeclaims")["items"]
        volumes = self.api.get("/api/v1/persistentvolumes")["items"]
        existing = {v["metadata"]["name"] for v in volumes}
        for pvc in claims:
            meta, spec = pvc["metadata"], pvc["spec"]
            wanted = meta.get("annotations", {}).get("volume.kubernetes.io/storage-provisioner")
            name = f"pvc-{meta['uid']}"
            if wanted != PROVISIONER or spec.get("volumeName") or name in existing:
                continue
            path = self.state_dir / "volumes" / f"{meta['namespace']}-{meta['name']}-{name[4:12]}"
            path.mkdir(parents=True, exist_ok=True)
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                },
                "spec": {
                    "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                    "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": spec.get("storageClassName", STORAGE_CLASS),
                    "volumeMode": spec.get("volumeMode", "Filesystem"),
                    "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            }
            self.api.request("POST", "/api/v1/persistentvolumes", pv)
            log.info("provisioned %s for %s/%s at %s", name, meta["namespace"], meta["name"], path)
        for pv in volumes:
            mine = pv["metadata"].get("annotations", {}).get("pv.kubernetes.io/provisioned-by")
            if mine == PROVISIONER and pv.get("status", {}).get("phase") == "Released":
                shutil.rmtree(pv["spec"]["hostPath"]["path"], ignore_errors=True)
                self.api.request("DELETE", f"/api/v1/persistentvolumes/{pv['metadata']['name']}")

    # --- pods ------------------------------------------------------------------------------

    def forget(self, uid: str) -> None:
        with self.workers_lock:
            self.workers.pop(uid, None)

    def observe(self, pod: dict, deleted: bool = False) -> None:
        if pod["spec"].get("nodeName") not in self.nodes:
            return
        uid = pod["metadata"]["uid"]
        with self.workers_lock:
            worker = self.workers.get(uid)
            if worker is None:
                if deleted or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    # Already finished (e.g. before an agent restart): only deletion is left.
                    if pod["metadata"].get("deletionTimestamp") and not deleted:
                        self.remove_finished(pod)
                    return
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.start()
        worker.pod["metadata"] = pod["metadata"]
        if pod["metadata"].get("deletionTimestamp") or deleted:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            worker.stop(float(30 if grace is None else grace))

    def remove_finished(self, pod: dict) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        try:
            body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
            self.api.request("DELETE", path, body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("deleting finished pod %s: %s", meta["name"], exc)

    def watch_pods(self) -> None:
        while not self.stopped.is_set():
            try:
                pods = self.api.get("/api/v1/pods")
                for pod in pods["items"]:
                    self.observe(pod)
                rv = pods["metadata"]["resourceVersion"]
                while not self.stopped.is_set():
                    for event in self.api.watch("/api/v1/pods", rv):
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            raise ApiError(obj.get("code", 500), obj.get("message", ""))
                        rv = obj["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            self.observe(obj, deleted=event["type"] == "DELETED")
            except (ApiError, OSError, ValueError) as exc:
                if not self.stopped.is_set():
                    log.warning("pod watch restarts: %s", exc)
                    self.stopped.wait(1)

    def shutdown(self, *_: Any) -> None:
        log.info("stopping: terminating pod processes")
        self.stopped.set()
        with self.workers_lock:
            workers = list(self.workers.values())
        procs = []
        for w in workers:
            w.stopping.set()
            procs += w.processes()
        terminate(procs, 5)
        for p in procs:
            p.wait()
        for w in workers:
            self.placeholders.release(w.placeholders)
            w.placeholders = []
        os._exit(0)

    def run(self) -> None:
        for node in self.nodes.values():
            self.register(node)
            self.renew_lease(node["name"])
        self.ensure_storage_class()
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        threading.Thread(target=self.provision, name="provisioner", daemon=True).start()
        self.watch_pods()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=Path, default=HERE / "nodes.json")
    parser.add_argument("--kubeconfig", type=Path, default=REPO / ".cluster" / "kubeconfig")
    parser.add_argument("--state-dir", type=Path, default=REPO / ".cluster")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    agent = NodeAgent(Api(args.kubeconfig), json.loads(args.nodes.read_text()), args.state_dir)
    signal.signal(signal.SIGTERM, agent.shutdown)
    signal.signal(signal.SIGINT, agent.shutdown)
    agent.run()


if __name__ == "__main__":
    main()
