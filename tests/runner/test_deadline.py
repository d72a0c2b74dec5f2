"""spec.timeoutSeconds: the runner stops itself and says what it was doing."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from runner.manifests import manifest, write_manifest
from typer.testing import CliRunner

from kondense.api.errors import DeadlineExceeded
from kondense.runners import engine
from kondense.runners.cli import app
from kondense.runners.deadline import deadline


def test_deadline_interrupts_work_even_through_a_broad_except() -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as stopped, deadline(0.2, lambda: "calibrate", 0.05):
        while time.monotonic() - started < 10:
            with contextlib.suppress(Exception):  # code under a deadline may swallow errors
                time.sleep(0.01)
    assert time.monotonic() - started < 5
    assert "while calibrate" in str(stopped.value)
    assert str(stopped.value).startswith("spec.timeoutSeconds:")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "the timer outlived the block"


def test_work_that_ends_in_time_leaves_no_timer_behind() -> None:
    with deadline(30, lambda: "export"):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


def test_kondense_run_keeps_the_specs_limit_and_reports_where_it_ran_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed: list[float] = []

    def run_out_of_time(job: Any, output: Any, progress: Any, **_: Any) -> None:
        armed.append(signal.getitimer(signal.ITIMER_REAL)[0])
        progress("quantize", 0, None)
        signal.raise_signal(signal.SIGALRM)  # as if timeoutSeconds were spent here
        raise AssertionError("the run went on past its deadline")

    monkeypatch.setattr(engine, "run_job", run_out_of_time)
    document = manifest("m.onnx", [{"quantize": {"mode": "dynamic"}}], "out", timeoutSeconds=120)
    log = tmp_path / "termination-log"
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(write_manifest(tmp_path / "job.yaml", document)),
            "--termination-log",
            str(log),
        ],
    )
    assert result.exit_code == 4, result.output
    assert 110 < armed[0] <= 120
    outcome = json.loads(log.read_text())
    assert outcome["reason"] == "DeadlineExceeded"
    assert "120 s while quantize" in outcome["message"]
    assert "raise timeoutSeconds" in outcome["message"]
