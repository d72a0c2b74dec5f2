"""The bad-input suite (issue #13 item 7), without a cluster: every manifest case of
tests/fixtures/bad_inputs.py refused by `kondense validate` naming the field, and the model,
data and storage cases refused by `kondense run` (exit 2, reason BadInput, nothing published).
The same manifests at apply time: tests/operator/test_bad_input_admission.py. The table of all
cases: tests/README.md."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fixtures.bad_inputs import SPEC_CASES, VALIDATE_ONLY_CASES
from fixtures.models import build_tiny_onnx
from runner.manifests import PIPELINE_EVALUATION, manifest, write_manifest
from typer.testing import CliRunner

from kondense.api.errors import ALLOW_HTTP_ENV, MAX_DOWNLOAD_BYTES_ENV
from kondense.runners.cli import app
from kondense.runners.io import fetch

cli = CliRunner()
DYNAMIC = [{"quantize": {"mode": "dynamic"}}]


def validate(tmp_path: Path, spec: dict[str, Any]) -> tuple[int, str]:
    path = tmp_path / "job.yaml"
    document = {
        "apiVersion": "kondense.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    path.write_text(yaml.safe_dump(document))
    result = cli.invoke(app, ["validate", str(path)])
    return result.exit_code, " ".join(result.output.split())


VALIDATED = [(case, spec, said) for case, spec, _, said in SPEC_CASES] + VALIDATE_ONLY_CASES


@pytest.mark.parametrize(("case", "spec", "expected"), VALIDATED, ids=[c[0] for c in VALIDATED])
def test_bad_manifest_is_refused_by_validate_naming_the_field(
    tmp_path: Path, case: str, spec: dict[str, Any], expected: str
) -> None:
    code, output = validate(tmp_path, spec)
    assert code == 2, f"{case} validated: {output}"
    assert expected in output, output


# --- model, data and storage: refused by the runner ------------------------------------------


def run_refused(tmp_path: Path, document: dict[str, Any]) -> str:
    """`kondense run` exits 2 with reason BadInput and publishes nothing at all."""
    log = tmp_path / "termination-log"
    path = write_manifest(tmp_path / "job.yaml", document)
    result = cli.invoke(app, ["run", str(path), "--termination-log", str(log)])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists(), "bad input must publish nothing"
    assert not list(tmp_path.glob(".out.partial-*")), "nor leave a half-written output"
    outcome = json.loads(log.read_text())
    assert outcome["succeeded"] is False and outcome["reason"] == "BadInput"
    return " ".join(result.output.split())


def job(model: str | Path, tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    return manifest(model, DYNAMIC, tmp_path / "out", evaluation=PIPELINE_EVALUATION, **kwargs)


class _Redirects(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.path.partition("?to=")[2])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def redirector() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirects)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def symlinked_environ(tmp_path: Path) -> str:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "model.safetensors").write_bytes(b"\0" * 16)
    (model / "tokenizer.json").symlink_to("/proc/self/environ")
    return str(model)


def sparse_ten_gigabytes(tmp_path: Path) -> str:
    model = tmp_path / "model.onnx"
    with model.open("wb") as stream:
        stream.truncate(10 * 1000**3)
    return str(model)


def npz_bomb(tmp_path: Path) -> str:
    """A 64 MiB member deflated to ~64 KiB: past a 16 MiB cap."""
    bomb = tmp_path / "eval.npz"
    np.savez_compressed(bomb, x=np.zeros((1 << 10, 1 << 14), dtype=np.float32))
    return str(bomb)


RunnerCase = tuple[str, Callable[[Path], dict[str, Any]], str]


def _case_symlink(tmp_path: Path) -> dict[str, Any]:
    return job(symlinked_environ(tmp_path), tmp_path)


def _case_sparse(tmp_path: Path) -> dict[str, Any]:
    return job(sparse_ten_gigabytes(tmp_path), tmp_path)


def _case_npz_bomb(tmp_path: Path) -> dict[str, Any]:
    model = build_tiny_onnx(tmp_path / "m.onnx")
    return job(model, tmp_path, data={"evaluation": {"uri": npz_bomb(tmp_path)}})


def _case_plain_http(tmp_path: Path) -> dict[str, Any]:
    return job("http://models.example.com/model.onnx", tmp_path)


def _case_loopback(tmp_path: Path) -> dict[str, Any]:
    return job("https://localhost:1/model.onnx", tmp_path)


RUNNER_CASES: list[RunnerCase] = [
    ("symlink-to-proc-self-environ", _case_symlink, "tokenizer.json in the model folder is a "
     "symlink to /proc/"),
    ("sparse-10-gb-model", _case_sparse, "spec.storage.maxDownloadBytes: "),
    ("npz-member-past-the-cap", _case_npz_bomb,
     "spec.data.evaluation.uri: eval.npz: member x.npy expands to "),
    ("plain-http-model", _case_plain_http,
     "spec.model.uri: http://models.example.com/model.onnx: plain http:// is refused"),
    ("loopback-model", _case_loopback, "spec.model.uri: https://localhost:1/model.onnx: "
     "localhost resolves to"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "build", "expected"), RUNNER_CASES, ids=[c[0] for c in RUNNER_CASES]
)
def test_bad_model_data_or_storage_is_refused_by_the_runner(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    build: Callable[[Path], dict[str, Any]],
    expected: str,
) -> None:
    monkeypatch.setenv(MAX_DOWNLOAD_BYTES_ENV, str(16 << 20))
    if case == "sparse-10-gb-model":  # refused by the default cap, 8 GiB
        monkeypatch.delenv(MAX_DOWNLOAD_BYTES_ENV)
    output = run_refused(tmp_path, build(tmp_path))
    assert expected in output, output


def test_a_redirect_to_a_private_address_is_refused_by_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redirector: int
) -> None:
    """The first host resolves to a public address (as a CDN's would); the redirect target,
    10.0.0.7, is checked before it is followed."""
    real = fetch.resolve_host
    monkeypatch.setattr(
        fetch, "resolve_host", lambda h, p: ["93.184.216.34"] if h == "localhost" else real(h, p)
    )
    monkeypatch.setenv(ALLOW_HTTP_ENV, "1")
    url = f"http://localhost:{redirector}/model.onnx?to=http://10.0.0.7/model.onnx"
    output = run_refused(tmp_path, job(url, tmp_path))
    assert "spec.model.uri: " in output, output
    assert "10.0.0.7 resolves to 10.0.0.7, a private or loopback address" in output, output
