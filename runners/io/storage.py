"""One way to read and write models, data and artifacts, whatever the URI scheme.

Schemes: plain paths and file:// (local), pvc://claim/path (a claim the operator mounted under
KONDENSE_PVC_ROOT, default /mnt/pvc), s3://bucket/key (s3fs; endpoint from AWS_ENDPOINT_URL or
KONDENSE_S3_ENDPOINT), https:// (read only). s3:// goes through fsspec (s3fs); https:// through
runners/io/fetch.py, which checks every address and redirect and caps the size. Every fetch, local
ones too, is refused past the download cap (a sparse 10 GB "model" never reaches a loader).
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kondense.api.errors import BadInput, KondenseError, StorageUnavailable
from kondense.api.outcome import Artifact
from kondense.api.spec import DEFAULT_PVC_ROOT
from kondense.runners.io.fetch import FetchPolicy, check_url, download

# spec.storage.maxDownloadBytes of the job being run (None: the pool's cap from the env).
_SPEC_CAP: contextvars.ContextVar[int | None] = contextvars.ContextVar("spec_cap", default=None)


@contextmanager
def download_cap(max_bytes: int | None) -> Iterator[None]:
    """Within the block, fetches are capped at `max_bytes` (spec.storage.maxDownloadBytes)."""
    token = _SPEC_CAP.set(max_bytes)
    try:
        yield
    finally:
        _SPEC_CAP.reset(token)


def fetch_policy() -> FetchPolicy:
    return FetchPolicy.from_env(_SPEC_CAP.get())


REPORT_NAME = "report.json"
_REMOTE_SCHEMES = {"s3", "https", "http"}
_CHUNK = 1 << 20


def scheme(uri: str) -> str:
    """file, pvc, s3 or https; plain paths are file."""
    parsed = urlparse(uri)
    if not parsed.scheme or len(parsed.scheme) == 1:  # len 1: a Windows drive letter
        return "file"
    return parsed.scheme.lower()


def is_local(uri: str) -> bool:
    """True for plain paths, file:// and pvc:// (all are files on this machine)."""
    kind = scheme(uri)
    if kind not in {"file", "pvc", *_REMOTE_SCHEMES}:
        raise BadInput(
            f"{uri}: unsupported URI scheme {kind}://; use a path, file://, pvc://, s3:// or https://"
        )
    return kind in {"file", "pvc"}


def resolve(uri: str, base_dir: Path | None) -> str:
    """`uri` with a relative local path made absolute against `base_dir` (the manifest's folder)."""
    if scheme(uri) != "file" or base_dir is None:
        return uri
    path = Path(urlparse(uri).path if uri.startswith("file://") else uri).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def local_path(uri: str) -> Path:
    """The local file for a path, file:// or pvc:// URI (pvc://claim/p: under KONDENSE_PVC_ROOT)."""
    kind = scheme(uri)
    if kind == "file":
        return Path(urlparse(uri).path if uri.startswith("file://") else uri).expanduser()
    if kind == "pvc":
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise BadInput(f"{uri}: a pvc:// URI names the claim first: pvc://CLAIM/path")
        root = Path(os.environ.get("KONDENSE_PVC_ROOT", DEFAULT_PVC_ROOT))
        relative = Path(parsed.netloc) / parsed.path.lstrip("/")
        if ".." in relative.parts:
            raise BadInput(f"{uri}: '..' may not leave the claim")
        return root / relative
    raise ValueError(f"{uri} is not local")


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem for a remote URI and the path within it."""
    import fsspec

    kind = scheme(uri)
    if kind == "s3":
        endpoint = os.environ.get("KONDENSE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        options: dict[str, Any] = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
        if endpoint and scheme(endpoint) in {"http", "https"}:
            # The endpoint may come from a job's own Secret: never a metadata address.
            check_url(endpoint, FetchPolicy(allow_http=True, allow_private=True))
        timeout = fetch_policy().timeout
        # botocore's own retries (standard mode: backoff with jitter) for throttling and 5xx.
        options["config_kwargs"] = {
            "connect_timeout": min(timeout, 60),
            "read_timeout": timeout,
            "retries": {"max_attempts": 3, "mode": "standard"},
        }
        fs = fsspec.filesystem("s3", **options)
        return fs, uri.split("://", 1)[1].rstrip("/")
    if kind in {"https", "http"}:
        return fsspec.filesystem(kind), uri
    raise ValueError(f"{uri} is not remote")


def fetch(uri: str, dest: Path) -> Path:
    """Make the file or directory at `uri` available locally and return its path.

    Local paths (and pvc://) are returned as they are — nothing is copied. Remote ones are
    downloaded into `dest` (a directory, created if needed) under their own base name.
    Raises BadInput when nothing is there.
    """
    policy = fetch_policy()
    if is_local(uri):
        path = local_path(uri)
        if not path.exists():
            raise BadInput(f"{uri}: no such file or directory")
        _check_size(uri, _local_size(path), policy)
        return path
    name = Path(urlparse(uri).path).name or "download"
    target = dest / name
    dest.mkdir(parents=True, exist_ok=True)
    if scheme(uri) in {"https", "http"}:
        return download(uri, target, policy)
    fs, remote = filesystem(uri)
    try:
        # info(), not exists(): exists() answers False for a 503 or a refused connection too.
        if fs.info(remote).get("type") == "directory":
            _check_size(uri, int(fs.du(remote.rstrip("/") + "/")), policy)
            fs.get(remote.rstrip("/") + "/", str(target), recursive=True)
        else:
            _check_size(uri, int(fs.info(remote).get("size") or 0), policy)
            fs.get(remote, str(target))
    except KondenseError:
        raise
    except Exception as error:
        raise storage_error(uri, error) from error
    return target


def _local_size(path: Path) -> int:
    """Bytes of the file, or of every file in the folder, as their sizes say (sparse or not)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _check_size(uri: str, size: int, policy: FetchPolicy) -> None:
    if size > policy.max_bytes:
        raise BadInput(
            f"{uri}: {size} bytes, over the download cap of {policy.max_bytes}; raise "
            "spec.storage.maxDownloadBytes or the pool's maxDownloadBytes",
            field="spec.storage.maxDownloadBytes",
        )


_NOT_FOUND_STATUS = frozenset({404, 410})
_FORBIDDEN_STATUS = frozenset({401, 403})


def storage_error(uri: str, error: BaseException) -> KondenseError:
    """What a failed storage call means for the job: BadInput when the object is not there or
    access is refused (the user's to fix), else StorageUnavailable (throttling, a 5xx, a
    dropped connection, DNS), which the Job retries. fsspec wraps the cause (an HTTP error
    becomes FileNotFoundError), so the whole chain of causes is read."""
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    detail = f"{type(chain[-1]).__name__}: {chain[-1]}"
    statuses = [s for s in (getattr(e, "status", None) for e in chain) if isinstance(s, int)]
    names = [cls.__name__ for e in chain for cls in type(e).__mro__]
    if statuses and statuses[-1] in _NOT_FOUND_STATUS:
        return BadInput(f"{uri}: no such object")
    if statuses and statuses[-1] in _FORBIDDEN_STATUS:
        return BadInput(f"{uri}: access denied ({detail}); check the credentials and permissions")
    if statuses:
        return StorageUnavailable(f"{uri}: the storage answered {statuses[-1]} ({detail})")
    if any(word in name for name in names for word in ("Connect", "Timeout", "DNS")):
        return StorageUnavailable(f"{uri}: the storage cannot be reached ({detail})")
    if any(isinstance(e, FileNotFoundError) for e in chain):
        return BadInput(f"{uri}: no such object")
    if any(isinstance(e, PermissionError) for e in chain):
        return BadInput(f"{uri}: access denied ({detail}); check the credentials and permissions")
    return StorageUnavailable(f"{uri}: the storage failed ({detail})")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def join(uri: str, name: str) -> str:
    """`uri`/`name`, for plain paths and URIs alike."""
    return uri.rstrip("/") + "/" + name


def describe(local_dir: Path, uri: str) -> list[Artifact]:
    """Artifacts for every file under `local_dir` as they will be named once published to `uri`,
    model files first.

    report.json is left out: it lists the others and cannot hold its own hash.
    """
    artifacts = []
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    # The model first (what a reader looks for), then the files beside it.
    files.sort(key=lambda p: not p.name.startswith("model."))
    for path in files:
        name = path.relative_to(local_dir).as_posix()
        if name == REPORT_NAME:
            continue
        artifacts.append(
            Artifact(
                name=name, uri=join(uri, name), sha256=sha256_of(path), bytes=path.stat().st_size
            )
        )
    return artifacts


def publish(local_dir: Path, uri: str) -> list[Artifact]:
    """Copy every file of `local_dir` to `uri` and return what was published (report.json too).

    A reader never sees a half-written output that looks complete: locally the files are
    staged beside the destination and moved into place in one rename (into a mounted claim's
    root, which cannot be renamed, they are copied in place); there and on S3 any old
    report.json is removed first and the new one is written last, so its presence means
    everything it lists is there.
    """
    kind = scheme(uri)
    if kind in {"https", "http"}:
        raise BadInput(f"{uri}: https:// is read only; write the output to a path, pvc:// or s3://")
    artifacts = describe(local_dir, uri)
    report = local_dir / REPORT_NAME
    if report.is_file():
        artifacts.append(
            Artifact(
                name=REPORT_NAME,
                uri=join(uri, REPORT_NAME),
                sha256=sha256_of(report),
                bytes=report.stat().st_size,
            )
        )
    if is_local(uri):
        _publish_local(local_dir, local_path(uri))
    else:
        _publish_remote(local_dir, uri, artifacts)
    return artifacts


def _publish_local(local_dir: Path, target: Path) -> None:
    if os.path.ismount(target) or (target.exists() and not os.access(target.parent, os.W_OK)):
        # A claim's root (pvc://claim) cannot be renamed: fill it in place, report last.
        _publish_in_place(local_dir, target)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    shutil.copytree(local_dir, staging)
    if target.exists():
        # Retire the old output first: it may be a previous run's, and the rename below
        # cannot replace a non-empty directory.
        retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)


def _publish_in_place(local_dir: Path, target: Path) -> None:
    """Copy into an existing folder: the old report.json goes first, the new one comes last."""
    (target / REPORT_NAME).unlink(missing_ok=True)
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        name = path.relative_to(local_dir)
        if name.as_posix() == REPORT_NAME:
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)
    if (local_dir / REPORT_NAME).is_file():
        partial = target / f".{REPORT_NAME}.partial"
        shutil.copyfile(local_dir / REPORT_NAME, partial)
        partial.rename(target / REPORT_NAME)


def _publish_remote(local_dir: Path, uri: str, artifacts: list[Artifact]) -> None:
    try:
        _put_remote(local_dir, uri, artifacts)
    except Exception as error:
        raise storage_error(uri, error) from error


def _put_remote(local_dir: Path, uri: str, artifacts: list[Artifact]) -> None:
    fs, remote = filesystem(uri)
    old_report = f"{remote}/{REPORT_NAME}"
    if fs.exists(old_report):
        fs.rm(old_report)
    for artifact in artifacts:
        if artifact.name == REPORT_NAME:
            continue
        fs.put(str(local_dir / artifact.name), f"{remote}/{artifact.name}")
    if (local_dir / REPORT_NAME).is_file():
        fs.put(str(local_dir / REPORT_NAME), old_report)
