"""The pre-flight connect to an object store's endpoint (``data/endpoint.py``): which endpoint each kind of
options means, why a connect failed, and when no probe is made (a proxy in between)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from parallelrun.data.endpoint import EndpointUnreachable, check_endpoint, endpoint_of

KEY = "a2V5"  # any base64: the resolution never uses it


@pytest.fixture(autouse=True)
def _no_store_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


ENDPOINTS = [
    # (protocol, filesystem options, the URL of the endpoint, its port)
    ("az", {"connection_string": f"DefaultEndpointsProtocol=http;AccountName=a;AccountKey={KEY};"
                                 "BlobEndpoint=http://127.0.0.1:10000/a;"}, "http://127.0.0.1:10000/a", 10000),
    ("abfs", {"connection_string": f"AccountName=acct;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn"},
     "https://acct.blob.core.chinacloudapi.cn", 443),
    ("az", {"connection_string": "UseDevelopmentStorage=true"}, "http://127.0.0.1:10000/devstoreaccount1", 10000),
    ("az", {"account_name": "acct", "account_host": "acct.blob.example.org"}, "https://acct.blob.example.org", 443),
    ("az", {"account_name": "acct", "anon": True}, "https://acct.blob.core.windows.net", 443),
    ("az", {}, None, None),  # adlfs says what is missing
    ("s3", {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}, "http://127.0.0.1:9000", 9000),
    ("s3a", {"endpoint_url": "https://minio.example.org",  # s3fs: the argument wins over client_kwargs
             "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}, "https://minio.example.org", 443),
    ("s3", {"key": "k", "secret": "s"}, None, None),  # AWS itself: botocore picks the host
    ("s3", {"client_kwargs": {"endpoint_url": "http://127.0.0.1:notaport"}}, None, None),
    ("gcs", {"endpoint_url": "http://127.0.0.1:9000"}, None, None),  # not a protocol we write to
]


@pytest.mark.parametrize(("protocol", "options", "url", "port"), ENDPOINTS)
def test_the_endpoint_a_filesystem_connects_to(protocol: str, options: dict[str, Any], url: str | None,
                                               port: int | None) -> None:
    found = endpoint_of(protocol, options)
    assert (found.url if found else None, found.port if found else None) == (url, port)


def test_environment_variables_name_the_endpoint_as_the_sdks_read_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=e;BlobEndpoint=http://127.0.0.1:1/e")
    assert endpoint_of("az", {}).url == "http://127.0.0.1:1/e"  # type: ignore[union-attr]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    assert endpoint_of("s3", {}).url == "http://127.0.0.1:2"  # type: ignore[union-attr]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:3")  # the service's own wins
    assert endpoint_of("s3", {}).url == "http://127.0.0.1:3"  # type: ignore[union-attr]
    assert endpoint_of("s3", {"endpoint_url": "http://127.0.0.1:4"}).url == "http://127.0.0.1:4"  # type: ignore[union-attr]


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    yield server
    server.close()


def _port(server: socket.socket) -> int:
    return int(server.getsockname()[1])


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _s3(port: int) -> dict[str, Any]:
    return {"s3": {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}}


def test_a_listening_endpoint_passes_and_a_dead_one_is_refused_at_once(listening: socket.socket) -> None:
    check_endpoint("s3://bucket/x", _s3(_port(listening)))
    port = _unused_port()
    t0 = time.monotonic()
    with pytest.raises(EndpointUnreachable) as info:
        check_endpoint("s3://bucket/x", _s3(port))
    assert time.monotonic() - t0 < 1
    assert str(info.value) == (f"nothing answered at the endpoint http://127.0.0.1:{port} (connection refused: "
                               f"nothing listens on port {port} of 127.0.0.1)")
    assert isinstance(info.value, ConnectionError)  # what the callers' advice keys on
    check_endpoint("/local/folder", _s3(port))  # local paths and other protocols are not probed
    check_endpoint("az://c/x", _s3(port))


def test_an_endpoint_that_never_answers_fails_after_the_timeout(listening: socket.socket) -> None:
    """A host that drops the connection attempt (a firewall, a wrong address): here a listener whose
    accept queue is full, so the kernel drops further SYNs."""
    held = []
    try:
        for _ in range(16):  # fill the accept queue (Linux: backlog 0 holds one connection)
            try:
                held.append(socket.create_connection(("127.0.0.1", _port(listening)), timeout=0.3))
            except TimeoutError:
                break
        else:
            pytest.skip("the listener's accept queue never filled: cannot make a connection hang here")
        t0 = time.monotonic()
        with pytest.raises(EndpointUnreachable, match=r"\(no answer from 127\.0\.0\.1 port \d+ within 0\.5 s\)"):
            check_endpoint("s3://bucket/x", _s3(_port(listening)), timeout=0.5)
        assert 0.4 < time.monotonic() - t0 < 3
    finally:
        for c in held:
            c.close()


def test_no_probe_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a proxy, a direct connect proves nothing: the SDK's requests go to the proxy."""
    port = _unused_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_unused_port()}")
    check_endpoint("s3://bucket/x", _s3(port))  # no error: not probed
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # ... unless the endpoint bypasses the proxy
    with pytest.raises(EndpointUnreachable):
        check_endpoint("s3://bucket/x", _s3(port))
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.delenv("NO_PROXY")
    options = {"s3": {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
                      "config_kwargs": {"proxies": {"http": "http://127.0.0.1:1"}}}}
    check_endpoint("s3://bucket/x", options)  # botocore's own proxy setting
