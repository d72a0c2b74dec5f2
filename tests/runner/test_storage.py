"""Storage: one abstraction for paths, file://, pvc:// and s3:// (a real S3-compatible server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kondense.api.errors import BadInput
from kondense.runners.io import storage

# Their servers are plain http on 127.0.0.1, which only such a pool may fetch from.
pytestmark = pytest.mark.usefixtures("loopback_storage")


def make_output(folder: Path, report: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"\x08\x07model-bytes")
    (folder / "tokenizer.json").write_text("{}")
    if report:
        (folder / "report.json").write_text(json.dumps({"accepted": True}))
    return folder


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    assert storage.resolve("models/minilm", tmp_path) == str(tmp_path / "models/minilm")
    assert storage.resolve("/abs/model.onnx", tmp_path) == "/abs/model.onnx"
    assert storage.resolve("s3://bucket/m.onnx", tmp_path) == "s3://bucket/m.onnx"


def test_local_publish_then_fetch_round_trip_with_matching_hashes(tmp_path: Path) -> None:
    source = make_output(tmp_path / "staged")
    target = tmp_path / "out" / "job"
    artifacts = storage.publish(source, f"file://{target}")
    assert [a.name for a in artifacts] == ["model.onnx", "tokenizer.json", "report.json"]
    (source / "a-config.json").write_text("{}")
    assert storage.describe(source, str(target))[0].name == "model.onnx"
    for artifact in artifacts:
        published = target / artifact.name
        assert storage.sha256_of(published) == artifact.sha256
        assert published.stat().st_size == artifact.bytes
    assert (
        storage.fetch(str(target / "model.onnx"), tmp_path / "dl").read_bytes().endswith(b"bytes")
    )


def test_republishing_replaces_the_previous_output_whole(tmp_path: Path) -> None:
    target = tmp_path / "out"
    storage.publish(make_output(tmp_path / "first"), str(target))
    (target / "stale.txt").write_text("from an older run")
    second = make_output(tmp_path / "second")
    (second / "model.onnx").write_bytes(b"new")
    storage.publish(second, str(target))
    assert not (target / "stale.txt").exists()
    assert (target / "model.onnx").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_pvc_uri_maps_under_the_claim_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KONDENSE_PVC_ROOT", str(tmp_path / "mnt"))
    storage.publish(make_output(tmp_path / "staged"), "pvc://models/results/run1")
    assert (tmp_path / "mnt/models/results/run1/report.json").is_file()
    fetched = storage.fetch("pvc://models/results/run1", tmp_path / "dl")
    assert fetched == tmp_path / "mnt/models/results/run1"


def test_pvc_uri_may_not_climb_out_of_the_claim(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="claim"):
        storage.local_path("pvc://models/../../etc/passwd")


def test_missing_local_model_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        storage.fetch(str(tmp_path / "absent.onnx"), tmp_path)


def test_https_is_read_only(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="read only"):
        storage.publish(make_output(tmp_path / "o"), "https://example.com/out")


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(BadInput, match="ftp://"):
        storage.is_local("ftp://host/model.onnx")


def test_s3_publish_and_fetch_round_trip(s3_env: str, tmp_path: Path) -> None:
    source = make_output(tmp_path / "staged")
    artifacts = storage.publish(source, "s3://kondense/jobs/one")
    assert artifacts[-1].uri == "s3://kondense/jobs/one/report.json"
    fetched = storage.fetch("s3://kondense/jobs/one", tmp_path / "dl")
    for artifact in artifacts:
        assert storage.sha256_of(fetched / artifact.name) == artifact.sha256
    single = storage.fetch("s3://kondense/jobs/one/model.onnx", tmp_path / "single")
    assert single.read_bytes() == (source / "model.onnx").read_bytes()


def test_s3_republish_without_report_leaves_no_stale_report(s3_env: str, tmp_path: Path) -> None:
    storage.publish(make_output(tmp_path / "first"), "s3://kondense/jobs/two")
    storage.publish(make_output(tmp_path / "second", report=False), "s3://kondense/jobs/two")
    fs, _ = storage.filesystem("s3://kondense/jobs/two")
    fs.invalidate_cache()
    assert not fs.exists("kondense/jobs/two/report.json")


def test_missing_s3_object_is_bad_input(s3_env: str, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such object"):
        storage.fetch("s3://kondense/absent/model.onnx", tmp_path)


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a folder."""
    import functools
    import http.server
    import threading

    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_fetch_downloads_the_file(http_root: tuple[Path, str], tmp_path: Path) -> None:
    root, base = http_root
    (root / "model.onnx").write_bytes(b"served bytes")
    fetched = storage.fetch(f"{base}/model.onnx", tmp_path / "dl")
    assert fetched.read_bytes() == b"served bytes" and fetched.name == "model.onnx"


def test_http_fetch_of_a_missing_file_is_bad_input(
    http_root: tuple[Path, str], tmp_path: Path
) -> None:
    _, base = http_root
    with pytest.raises(BadInput, match=r"absent\.onnx"):
        storage.fetch(f"{base}/absent.onnx", tmp_path / "dl")


def test_publishing_into_a_mounted_claim_root_replaces_the_report_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim's root is a mount point and cannot be renamed; files are copied in place.
    claim = tmp_path / "mnt" / "results"
    claim.mkdir(parents=True)
    (claim / "report.json").write_text('{"old": true}')
    inode = claim.stat().st_ino
    real_ismount = storage.os.path.ismount
    monkeypatch.setattr(storage.os.path, "ismount", lambda p: Path(p) == claim or real_ismount(p))
    monkeypatch.setenv("KONDENSE_PVC_ROOT", str(tmp_path / "mnt"))
    artifacts = storage.publish(make_output(tmp_path / "staged"), "pvc://results")
    assert json.loads((claim / "report.json").read_text()) == {"accepted": True}
    assert {a.name for a in artifacts} == {"model.onnx", "tokenizer.json", "report.json"}
    assert [p.name for p in claim.iterdir() if p.name.startswith(".")] == []
    assert claim.stat().st_ino == inode, "the mounted folder itself must stay in place"
    assert (claim / "model.onnx").is_file()
