"""The node agent stops a pod that is deleted while its container is being started."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Starts a real container process through the launcher (mount namespaces, as root).
pytestmark = pytest.mark.cluster


def _node_agent() -> ModuleType:
    path = Path(__file__).with_name("node_agent.py")
    spec = importlib.util.spec_from_file_location("node_agent_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Api:
    """Accepts the worker's status reports; this test reads the process, not the API."""

    port = 6443

    def request(self, *_: Any, **__: Any) -> dict[str, Any]:
        return {}


def test_deletion_while_the_container_starts_still_stops_its_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_module = _node_agent()
    agent = agent_module.NodeAgent(_Api(), [], tmp_path)
    pod = {
        "metadata": {"namespace": "ns", "name": "doomed", "uid": "uid-1"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "sleeper", "command": ["sleep", "60"]}],
        },
    }
    worker = agent_module.PodWorker(agent, pod)
    worker.dir.mkdir(parents=True)
    real_popen = subprocess.Popen

    def popen_then_delete(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = real_popen(*args, **kwargs)
        worker.stop(1.0)  # the pod is deleted before the worker has recorded its process
        time.sleep(0.5)  # forces the interleaving: the stopper looks for processes now
        return process

    monkeypatch.setattr(agent_module.subprocess, "Popen", popen_then_delete)
    started = time.monotonic()
    try:
        code = worker.run_once(worker.containers[0], {})
    finally:
        agent.placeholders.release(worker.placeholders)
    assert code == 128 + signal.SIGTERM, "the deleted pod's process ran to its end"
    assert time.monotonic() - started < 30
