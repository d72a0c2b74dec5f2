"""Fixtures of the runner tests: a real S3-compatible server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto) on 127.0.0.1 with a bucket `kondense`."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials).create_bucket(
        Bucket="kondense"
    )
    yield endpoint
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import fsspec

    monkeypatch.setenv("KONDENSE_S3_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fsspec.filesystem("s3").clear_instance_cache()
    return s3_endpoint


@pytest.fixture
def loopback_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads from the tests' plain-http servers on 127.0.0.1: the policy of a pool with
    allowHttp and allowPrivateNetworks (link-local addresses stay refused)."""
    from kondense.api.errors import ALLOW_HTTP_ENV, ALLOW_PRIVATE_ENV

    monkeypatch.setenv(ALLOW_HTTP_ENV, "1")
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
