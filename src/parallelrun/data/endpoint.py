"""Fail fast when nothing answers at an object store's endpoint: a TCP connect before the first request.

Why: the storage SDKs retry a request that could not connect, with back-off, before they report it. The
Azure SDK (azure-storage-blob's ``ExponentialRetry``: waits of 15, 18 and 24 s per request, and adlfs makes
several requests to list a path) took 172 s to report a refused connection while listing a dataset and
82 s while checking an output; botocore (5 attempts, random waits of up to 1, 2, 4 and 8 s) took 4.5 to
11.6 s. A user who mistyped a port or a host, or did not start Azurite, waited that long for an error.

Why not lower the SDKs' retries instead: adlfs builds its ``BlobServiceClient`` without passing any retry
setting through, and botocore's ``retries`` setting counts every retryable error alike, so fewer attempts
would also mean fewer retries of throttling and 5xx answers on a working endpoint. The probe leaves the SDKs'
retries as they are, and it is made only where parallelrun first meets a store (listing a dataset or an
input, a datastore's upload/download/listing, the output's ``check_writable``, a pipeline's checks of an
earlier step's remote output before reuse), never in the workers:
a transient outage during a run is still ridden out by the SDK's retries, as before.

What is probed: the host and port the filesystem will connect to, worked out from its options as adlfs and
s3fs do (a connection string's ``BlobEndpoint``, ``account_host``, the account's default endpoint; s3fs's
``endpoint_url``, ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``). Nothing is probed when that is not known
(S3 on AWS's own endpoints, chosen per bucket and region by botocore) or when requests go through a proxy
(``HTTPS_PROXY`` ... or s3fs's ``config_kwargs={"proxies": ...}``), where a direct connect proves nothing.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Linux retransmits an unanswered SYN after 1 s and again 2 s later: 5 s rides out two lost SYNs on a
# working network, and is still far below the SDKs' minutes for a host that never answers.
CONNECT_TIMEOUT = 5.0

# What every message says after ``EndpointUnreachable``: a job's inputs and output, a dataset's listing, a
# datastore's operations, a pipeline's checks. ``advice`` appends what the caller knows about fixing it.
ADVICE = "Check the storage endpoint: is the storage service running, are its host and port right?"
# Where a job's endpoints come from (its inputs and output): the remedy its messages append.
FROM_STORAGE_OPTIONS = ("They come from the storage options (a connection string's BlobEndpoint, an S3 "
                        "endpoint_url) or the backend's environment variables (AZURE_STORAGE_CONNECTION_STRING, "
                        "AWS_ENDPOINT_URL).")
# ... and a URL's read with no storage options (a dataset's path given as a URL).
FROM_ENVIRONMENT = ("They come from the backend's environment variables (AZURE_STORAGE_CONNECTION_STRING, "
                    "AWS_ENDPOINT_URL).")

_AZURE = ("az", "abfs", "abfss")
_S3 = ("s3", "s3a")
# azure-storage-blob's endpoint for ``UseDevelopmentStorage=true`` (Azurite's default blob port).
_DEVELOPMENT_STORAGE = "http://127.0.0.1:10000/devstoreaccount1"


class EndpointUnreachable(ConnectionError):
    """Nothing answered at a store's endpoint. Internal: each caller translates it into its own error
    (``DatasetError``, ``UsageError``, ``OutputError``) with advice that fits what it was doing."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"nothing answered at the endpoint {endpoint} ({reason})")


def advice(remedy: str = "") -> str:
    """``ADVICE``, then ``remedy``: where the endpoint is set or how to change it (re-register the datastore,
    ...), when the caller knows."""
    return f"{ADVICE} {remedy}" if remedy else ADVICE


@dataclass(frozen=True)
class Endpoint:
    """Where a filesystem sends its requests: ``url`` as the user wrote it, and the host and port it means."""

    url: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint | None:
        """None for a URL that names no host (the SDK will say what is wrong with it)."""
        try:
            parts = urlsplit(url)
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
        except ValueError:  # a port that is not a number, or out of range
            return None
        if not parts.hostname or port is None:
            return None
        return cls(url.rstrip("/"), parts.hostname, port)

    def check(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Open and close a TCP connection; raise ``EndpointUnreachable`` saying why that failed."""
        try:
            socket.create_connection((self.host, self.port), timeout=timeout).close()
        except socket.gaierror as e:
            raise EndpointUnreachable(self.url, f"the host name {self.host!r} does not resolve: {e.strerror}") \
                from None
        except ConnectionRefusedError:
            raise EndpointUnreachable(self.url, f"connection refused: nothing listens on port {self.port} of "
                                                f"{self.host}") from None
        except TimeoutError:
            raise EndpointUnreachable(self.url, f"no answer from {self.host} port {self.port} within "
                                                f"{timeout:g} s") from None
        except OSError as e:  # the network or host is unreachable, ...
            raise EndpointUnreachable(self.url, f"cannot connect to {self.host} port {self.port}: "
                                                f"{e.strerror or e}") from None


def check_endpoint(url: str, storage_options: dict[str, Any] | None = None,
                   timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise ``EndpointUnreachable`` when nothing answers where the filesystem of ``url`` would connect.

    ``storage_options`` is keyed by protocol (``{"az": {...}}``), as ``storage.url_to_fs`` takes it. Does
    nothing for local paths, unknown protocols, an endpoint that cannot be worked out, or through a proxy.
    """
    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    check_protocol_endpoint(protocol, (storage_options or {}).get(protocol) or {}, timeout)


def check_protocol_endpoint(protocol: str, options: dict[str, Any], timeout: float = CONNECT_TIMEOUT) -> None:
    """``check_endpoint`` for a filesystem's own keyword arguments (``options``)."""
    endpoint = endpoint_of(protocol, options)
    if endpoint is not None and not _through_proxy(endpoint, options):
        endpoint.check(timeout)


def endpoint_of(protocol: str, options: dict[str, Any]) -> Endpoint | None:
    """The endpoint the ``protocol`` filesystem built with ``options`` sends its requests to, if known."""
    if protocol in _AZURE:
        url = _azure_endpoint(options)
    elif protocol in _S3:
        url = _s3_endpoint(options)
    else:
        return None
    return Endpoint.parse(url) if url else None


def _azure_endpoint(options: dict[str, Any]) -> str | None:
    """adlfs's choice: a connection string first (``AZURE_STORAGE_CONNECTION_STRING`` when none is given),
    then ``account_host``, then the account's endpoint on Azure's public cloud."""
    connection_string = options.get("connection_string") or os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        fields = {}
        for part in str(connection_string).split(";"):
            key, sep, value = part.partition("=")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if fields.get("usedevelopmentstorage", "").lower() == "true":
            return _DEVELOPMENT_STORAGE
        if fields.get("blobendpoint"):
            return fields["blobendpoint"]
        account = fields.get("accountname")
        if not account:
            return None
        scheme = fields.get("defaultendpointsprotocol", "https")
        return f"{scheme}://{account}.blob.{fields.get('endpointsuffix', 'core.windows.net')}"
    if options.get("account_host"):
        return f"https://{options['account_host']}"
    account = options.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    return f"https://{account}.blob.core.windows.net" if account else None


def _s3_endpoint(options: dict[str, Any]) -> str | None:
    """s3fs's ``endpoint_url`` (which wins over ``client_kwargs``), then botocore's environment variables.
    None for AWS itself: botocore picks the host per bucket and region, and it answers."""
    client_kwargs = options.get("client_kwargs") or {}
    url = (options.get("endpoint_url") or client_kwargs.get("endpoint_url")
           or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    return str(url) if url else None


def _through_proxy(endpoint: Endpoint, options: dict[str, Any]) -> bool:
    """Whether requests to ``endpoint`` go through a proxy (the SDKs honour the proxy environment
    variables; botocore also takes ``proxies`` in its config)."""
    if (options.get("config_kwargs") or {}).get("proxies"):
        return True
    import urllib.request  # here: it imports http.client and email, which nothing else on this path needs

    proxies = urllib.request.getproxies()
    scheme = urlsplit(endpoint.url).scheme.lower()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(endpoint.host)
