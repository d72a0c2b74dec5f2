"""Storage failures: the input's fault (not found, forbidden) is BadInput and final; the
storage's (throttling, 5xx, refused connections, DNS) is StorageUnavailable, which ends the
runner with its own exit code that the Job's podFailurePolicy retries. Served for real by an
HTTP server on 127.0.0.1 that answers each path with the status the path names."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kondense.api.errors import EXIT_BAD_INPUT, BadInput, StorageUnavailable
from kondense.runners.io import storage

# Their servers are plain http on 127.0.0.1, which only such a pool may fetch from.
pytestmark = pytest.mark.usefixtures("loopback_storage")


class _Answers(http.server.BaseHTTPRequestHandler):
    """GET/HEAD /<status>/<name> answers <status>."""

    def do_HEAD(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.send_response(int(self.path.strip("/").split("/")[0]))
        self.send_header("Content-Length", "5")
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(b"bytes")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def answering() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [404, 410, 401, 403])
def test_missing_or_forbidden_objects_are_bad_input(
    answering: str, tmp_path: Path, status: int
) -> None:
    with pytest.raises(BadInput) as raised:
        storage.fetch(f"{answering}/{status}/model.onnx", tmp_path)
    assert f"{status}/model.onnx" in str(raised.value)
    assert raised.value.exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_throttling_and_server_errors_are_retryable(
    answering: str, tmp_path: Path, status: int
) -> None:
    with pytest.raises(StorageUnavailable, match=str(status)) as raised:
        storage.fetch(f"{answering}/{status}/model.onnx", tmp_path)
    assert raised.value.exit_code != EXIT_BAD_INPUT
    assert raised.value.reason == "StorageUnavailable"


def test_a_refused_connection_is_retryable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nobody listens
    with pytest.raises(StorageUnavailable):
        storage.fetch(f"http://127.0.0.1:{port}/model.onnx", tmp_path)


def test_a_name_that_does_not_resolve_is_retryable(tmp_path: Path) -> None:
    """DNS: a cluster's resolver that hiccups looks the same as this reserved name."""
    with pytest.raises(StorageUnavailable):
        storage.fetch("http://no-such-host.invalid/model.onnx", tmp_path)


def test_a_served_object_is_still_fetched(answering: str, tmp_path: Path) -> None:
    assert storage.fetch(f"{answering}/200/model.onnx", tmp_path).read_bytes() == b"bytes"
