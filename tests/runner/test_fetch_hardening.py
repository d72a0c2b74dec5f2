"""Fetching, hardened (issue #13 item 3): https only unless allowed, no link-local or (unless
allowed) private addresses after DNS resolution and on every redirect, a size cap, a timeout,
retries with backoff; symlinks leaving a model folder and zip members past the cap refused.
Served for real by HTTP servers on 127.0.0.1 and moto's S3 server."""

from __future__ import annotations

import http.server
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kondense.api.errors import (
    ALLOW_HTTP_ENV,
    ALLOW_PRIVATE_ENV,
    DOWNLOAD_TIMEOUT_ENV,
    MAX_DOWNLOAD_BYTES_ENV,
    BadInput,
    StorageUnavailable,
)
from kondense.runners.io import fetch, storage


class _Server(http.server.BaseHTTPRequestHandler):
    """/redirect?to=URL answers 302 to URL; /big streams 3 MB without a length; /sized
    declares 3 MB; /flaky answers 503 on its first request; /slow waits 3 s; else 5 bytes."""

    hits: dict[str, int] = {}

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query.removeprefix("to="))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/big":
            self.send_response(200)
            self.end_headers()
            for _ in range(3):
                self.wfile.write(b"\0" * (1 << 20))
            self.close_connection = True
        elif path == "/sized":
            self.send_response(200)
            self.send_header("Content-Length", str(3 << 20))
            self.end_headers()
        elif path == "/flaky" and self.hits[path] == 1:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            if path == "/slow":
                time.sleep(3)
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"bytes")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield "127.0.0.1", httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "BACKOFF_SECONDS", 0.01)


@pytest.fixture(autouse=True)
def strict_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner pod's defaults, whatever the environment running the tests has set."""
    for name in (ALLOW_HTTP_ENV, ALLOW_PRIVATE_ENV, MAX_DOWNLOAD_BYTES_ENV, DOWNLOAD_TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)


def test_plain_http_is_refused_unless_the_pool_allows_it(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"plain http:// is refused; use https://"):
        storage.fetch("http://models.example.com/model.onnx", tmp_path)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://[fe80::1]/model.onnx",
        "https://[::ffff:169.254.169.254]/model.onnx",
        "https://[fd00:ec2::254]/latest",
        "https://0.0.0.0/model.onnx",
    ],
)
def test_link_local_and_metadata_addresses_are_refused_even_where_private_ones_are_allowed(
    url: str, tmp_path: Path, loopback_storage: None
) -> None:
    with pytest.raises(BadInput, match=r"link-local|metadata"):
        storage.fetch(url, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "[::1]", "192.168.1.1"])
def test_private_and_loopback_addresses_are_refused_by_default(host: str, tmp_path: Path) -> None:
    """Checked after DNS resolution: `localhost` is refused for what it resolves to."""
    with pytest.raises(BadInput, match=r"private or loopback address.*allowPrivateNetworks"):
        storage.fetch(f"https://{host}/model.onnx", tmp_path)


def test_a_redirect_to_a_private_address_is_refused(
    server: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first hop passes (its name resolves to a public address, as a real CDN's would);
    the redirect to 10.1.2.3 is checked before it is followed."""
    _, port = server
    real = fetch.resolve_host
    monkeypatch.setattr(
        fetch, "resolve_host", lambda h, p: ["93.184.216.34"] if h == "localhost" else real(h, p)
    )
    monkeypatch.setenv(ALLOW_HTTP_ENV, "1")
    url = f"http://localhost:{port}/redirect?to=http://10.1.2.3/model.onnx"
    with pytest.raises(BadInput, match=r"10.1.2.3 resolves to 10.1.2.3, a private"):
        storage.fetch(url, tmp_path)
    assert _Server.hits["/redirect"] >= 1
    assert list(tmp_path.iterdir()) == []


def test_a_redirect_to_the_metadata_endpoint_is_refused(
    server: tuple[str, int], tmp_path: Path, loopback_storage: None
) -> None:
    host, port = server
    url = f"http://{host}:{port}/redirect?to=http://169.254.169.254/latest/"
    with pytest.raises(BadInput, match=r"169.254.169.254.*link-local"):
        storage.fetch(url, tmp_path)


def test_an_allowed_redirect_is_followed(
    server: tuple[str, int], tmp_path: Path, loopback_storage: None
) -> None:
    host, port = server
    url = f"http://{host}:{port}/redirect?to=/model.onnx"
    assert storage.fetch(url, tmp_path).read_bytes() == b"bytes"


@pytest.mark.parametrize("path", ["/big", "/sized"])
def test_a_download_past_the_cap_is_refused_and_leaves_nothing(
    path: str,
    server: tuple[str, int],
    tmp_path: Path,
    loopback_storage: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(MAX_DOWNLOAD_BYTES_ENV, str(1 << 20))
    host, port = server
    with pytest.raises(BadInput, match=r"over 1048576 bytes") as refused:
        storage.fetch(f"http://{host}:{port}{path}", tmp_path / "in")
    assert refused.value.field == "spec.storage.maxDownloadBytes"
    assert list((tmp_path / "in").iterdir()) == []


def test_the_spec_cap_overrides_the_pools(
    server: tuple[str, int], tmp_path: Path, loopback_storage: None
) -> None:
    host, port = server
    with storage.download_cap(4), pytest.raises(BadInput, match=r"over 4 bytes"):
        storage.fetch(f"http://{host}:{port}/model.onnx", tmp_path)
    assert storage.fetch(f"http://{host}:{port}/model.onnx", tmp_path).read_bytes() == b"bytes"


def test_a_transient_error_is_retried_with_backoff(
    server: tuple[str, int], tmp_path: Path, loopback_storage: None, fast_retries: None
) -> None:
    host, port = server
    assert storage.fetch(f"http://{host}:{port}/flaky", tmp_path).read_bytes() == b"bytes"
    assert _Server.hits["/flaky"] == 2


def test_a_server_that_does_not_answer_in_time_is_storage_unavailable(
    server: tuple[str, int],
    tmp_path: Path,
    loopback_storage: None,
    fast_retries: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DOWNLOAD_TIMEOUT_ENV, "0.5")
    host, port = server
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        storage.fetch(f"http://{host}:{port}/slow", tmp_path)
    assert time.monotonic() - started < 2.9  # the three tries time out; none waits it out


def test_an_s3_object_past_the_cap_is_refused_before_download(s3_env: str, tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_env})
    fs.mkdir("capped")
    fs.pipe("capped/model.onnx", b"x" * 2000)
    with storage.download_cap(1000), pytest.raises(BadInput, match=r"2000 bytes, over"):
        storage.fetch("s3://capped/model.onnx", tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_a_sparse_ten_gigabyte_model_file_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    with model.open("wb") as stream:
        stream.truncate(10 * 1000**3)  # sparse: no disk used
    with pytest.raises(BadInput, match=r"10000000000 bytes, over the download cap"):
        storage.fetch(str(model), tmp_path / "in")


def test_a_symlink_leaving_the_model_folder_is_refused(tmp_path: Path) -> None:
    from kondense.runners.model.assets import copy_hf_assets

    model = tmp_path / "model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").symlink_to("/proc/self/environ")
    with pytest.raises(BadInput, match=r"tokenizer.json .* symlink to /proc/.*environ"):
        copy_hf_assets(model, tmp_path / "out")
    assert not (tmp_path / "out" / "tokenizer.json").exists()
    # Inside a folder copied whole, too.
    (model / "tokenizer.json").unlink()
    (tmp_path / "secret.txt").write_text("token")
    (model / "1_Pooling" / "config.json").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(BadInput, match=r"outside the folder"):
        copy_hf_assets(model, tmp_path / "out2")
    # A link that stays inside the folder is copied.
    (model / "1_Pooling" / "config.json").unlink()
    (model / "1_Pooling" / "config.json").symlink_to(model / "config.json")
    copy_hf_assets(model, tmp_path / "out3")
    assert (tmp_path / "out3" / "1_Pooling" / "config.json").read_text() == "{}"


def test_an_npz_member_that_expands_past_the_cap_is_refused(tmp_path: Path) -> None:
    from kondense.runners.io.data import _iter_npz

    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.zeros((64, 1 << 18), dtype=np.float32))  # 64 MiB of zeros
    assert bomb.stat().st_size < 1 << 20
    with storage.download_cap(16 << 20), pytest.raises(BadInput, match=r"x.npy expands to"):
        next(_iter_npz(bomb, 10, ["x"], 1))


def test_a_model_archive_with_too_many_members_is_refused(tmp_path: Path) -> None:
    from kondense.runners.io.archives import MAX_MEMBERS
    from kondense.runners.model.formats import detect_format

    archive = tmp_path / "model.pt2"
    with zipfile.ZipFile(archive, "w") as zf:
        for index in range(MAX_MEMBERS + 1):
            zf.writestr(f"m/{index}", b"")
    with pytest.raises(BadInput, match=r"archive members"):
        detect_format(archive)


def test_s3_requests_have_the_pools_timeout_and_retries(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DOWNLOAD_TIMEOUT_ENV, "7")
    fs, _ = storage.filesystem("s3://kondense/model.onnx")
    assert fs.config_kwargs["read_timeout"] == 7
    assert fs.config_kwargs["retries"] == {"max_attempts": 3, "mode": "standard"}


def test_an_s3_endpoint_at_the_metadata_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The endpoint may come from a job's own Secret (AWS_ENDPOINT_URL)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://169.254.169.254")
    monkeypatch.delenv("KONDENSE_S3_ENDPOINT", raising=False)
    with pytest.raises(BadInput, match=r"169\.254\.169\.254.*link-local"):
        storage.filesystem("s3://kondense/model.onnx")
