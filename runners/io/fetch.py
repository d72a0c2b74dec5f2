"""Downloads over http(s), hardened: which schemes and addresses may be fetched, how big a
download may be, how long it may take, and how transient failures are retried.

The policy comes from the runner pod's environment, which the operator sets from the node
pool (operator/jobs.py: fetch_policy_env); with nothing set (`kondense run` on a laptop, tests)
the strict defaults apply:

- https only; plain http:// when KONDENSE_ALLOW_HTTP=1 (the pool's allowHttp).
- Link-local addresses (169.254.0.0/16, fe80::/10, among them every cloud's metadata
  endpoint) are always refused. Private, loopback, unique-local and other non-global
  addresses are refused unless KONDENSE_ALLOW_PRIVATE_NETWORKS=1 (allowPrivateNetworks).
  Every address a host name resolves to is checked, on the first request and on every
  redirect (followed here, one hop at a time, at most MAX_REDIRECTS).
- At most KONDENSE_MAX_DOWNLOAD_BYTES per download (spec.storage.maxDownloadBytes overrides
  the pool's cap), each request with a KONDENSE_DOWNLOAD_TIMEOUT seconds timeout; a refused
  connection, a timeout, 429 and 5xx answers are retried RETRIES times with backoff.

The connection resolves the name again after the check: a resolver that answers differently
the second time (DNS rebinding) is out of reach of this check; the chart's opt-in runner
NetworkPolicy is the network-level backstop.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kondense.api.errors import (
    ALLOW_HTTP_ENV,
    ALLOW_PRIVATE_ENV,
    DOWNLOAD_TIMEOUT_ENV,
    MAX_DOWNLOAD_BYTES_ENV,
    BadInput,
    StorageUnavailable,
)
from kondense.api.spec import DEFAULT_DOWNLOAD_TIMEOUT_SECONDS, DEFAULT_MAX_DOWNLOAD_BYTES

MAX_REDIRECTS = 5
RETRIES = 2  # after the first try
BACKOFF_SECONDS = 0.5  # doubled for each retry
_CHUNK = 1 << 20
_RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class FetchPolicy:
    allow_http: bool = False
    allow_private: bool = False
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    timeout: float = DEFAULT_DOWNLOAD_TIMEOUT_SECONDS

    @classmethod
    def from_env(cls, max_bytes: int | None = None) -> FetchPolicy:
        """The pool's policy from the environment; `max_bytes` (spec.storage) overrides its cap."""
        env = os.environ
        return cls(
            allow_http=env.get(ALLOW_HTTP_ENV) == "1",
            allow_private=env.get(ALLOW_PRIVATE_ENV) == "1",
            max_bytes=max_bytes
            or int(env.get(MAX_DOWNLOAD_BYTES_ENV) or DEFAULT_MAX_DOWNLOAD_BYTES),
            timeout=float(env.get(DOWNLOAD_TIMEOUT_ENV) or DEFAULT_DOWNLOAD_TIMEOUT_SECONDS),
        )


def refused_address(address: str, allow_private: bool) -> str | None:
    """Why `address` (an IP literal) may not be fetched from, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return "a link-local address (cloud metadata endpoints live there)"
    if ip == ipaddress.ip_address("fd00:ec2::254"):  # AWS's IPv6 metadata endpoint
        return "a cloud metadata address"
    if not ip.is_global and not allow_private:
        return "a private or loopback address; the node pool's allowPrivateNetworks permits those"
    return None


def check_url(url: str, policy: FetchPolicy) -> None:
    """BadInput unless `url`'s scheme is allowed and every address its host resolves to is."""
    parsed = urllib.parse.urlsplit(url)
    kind = parsed.scheme.lower()
    if kind == "http" and not policy.allow_http:
        raise BadInput(f"{url}: plain http:// is refused; use https:// (or a pool with allowHttp)")
    if kind not in {"http", "https"}:
        raise BadInput(f"{url}: only https:// is fetched over the web, not {kind}://")
    host = parsed.hostname
    if not host:
        raise BadInput(f"{url}: the URL names no host")
    try:
        addresses = resolve_host(host, parsed.port or (443 if kind == "https" else 80))
    except socket.gaierror as error:
        raise StorageUnavailable(f"{url}: the host {host} cannot be resolved ({error})") from error
    for address in addresses:
        why = refused_address(address, policy.allow_private)
        if why is not None:
            raise BadInput(f"{url}: {host} resolves to {address}, {why}")


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal: itself)."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port)})


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects come back as answers, so that each hop is checked before it is followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def download(url: str, target: Path, policy: FetchPolicy) -> Path:
    """Download `url` into the file `target` under `policy`; nothing is left at `target`
    unless the whole object arrived. BadInput for the input's fault, StorageUnavailable for
    the storage's after the retries."""
    for attempt in range(RETRIES + 1):
        try:
            return _download_once(url, target, policy)
        except StorageUnavailable:
            if attempt == RETRIES:
                raise
            time.sleep(BACKOFF_SECONDS * 2**attempt)
    raise AssertionError("unreachable")


def _download_once(url: str, target: Path, policy: FetchPolicy) -> Path:
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        check_url(current, policy)
        try:
            response = _OPENER.open(current, timeout=policy.timeout)
        except urllib.error.HTTPError as error:
            location = (
                error.headers.get("Location") if error.code in {301, 302, 303, 307, 308} else None
            )
            if location:
                current = urllib.parse.urljoin(current, location)
                continue
            raise _http_error(url, error) from error
        except (urllib.error.URLError, OSError) as error:
            raise StorageUnavailable(f"{url}: the storage cannot be reached ({error})") from error
        with response:
            _save(url, response, target, policy)
        return target
    raise BadInput(f"{url}: more than {MAX_REDIRECTS} redirects")


def _http_error(url: str, error: urllib.error.HTTPError) -> BadInput | StorageUnavailable:
    if error.code in {404, 410}:
        return BadInput(f"{url}: no such object")
    if error.code in {401, 403}:
        return BadInput(f"{url}: access denied (HTTP {error.code}); check the credentials")
    if error.code in _RETRIED_STATUS or error.code >= 500:
        return StorageUnavailable(f"{url}: the storage answered {error.code}")
    return BadInput(f"{url}: the server answered {error.code}")


def _save(url: str, response: Any, target: Path, policy: FetchPolicy) -> None:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise _too_big(url, int(declared), policy)
    partial = target.with_name(f".{target.name}.partial")
    received = 0
    try:
        with partial.open("wb") as stream:
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > policy.max_bytes:
                    raise _too_big(url, received, policy)
                stream.write(chunk)
    except (TimeoutError, ConnectionError) as error:
        partial.unlink(missing_ok=True)
        raise StorageUnavailable(f"{url}: the download broke off ({error})") from error
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(target)


def _too_big(url: str, size: int, policy: FetchPolicy) -> BadInput:
    return BadInput(
        f"{url}: over {policy.max_bytes} bytes (at least {size}); raise "
        "spec.storage.maxDownloadBytes or the pool's maxDownloadBytes",
        field="spec.storage.maxDownloadBytes",
    )
