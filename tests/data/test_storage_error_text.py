"""What a failed storage request says (``data/storage_errors.py``): the exception chain as a traceback shows it
(a context the code dropped with ``raise ... from None`` is not quoted), the endpoint probe's own words, and a
connection string's public fields (account, endpoint) readable while its credentials are masked."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from parallelrun.data.endpoint import check_endpoint
from parallelrun.data.storage_errors import listing_error, redact, service_error
from parallelrun.errors import DatasetError
from parallelrun.preview import plan_job

KEY = base64.b64encode(b"not a real account key" * 3).decode()  # 88 characters, as Azure's
# What a job's messages say after "nothing answered" (data/endpoint.py's one phrase, and where a job sets it).
JOB_ENDPOINT_ADVICE = ("Check the storage endpoint: is the storage service running, are its host and port right? "
                       "They come from the storage options (a connection string's BlobEndpoint, an S3 endpoint_url) "
                       "or the backend's environment variables (AZURE_STORAGE_CONNECTION_STRING, AWS_ENDPOINT_URL).")


def _raised(fail: Callable[[], object]) -> BaseException:
    try:
        fail()
    except Exception as e:  # noqa: BLE001 - the exception under test, whatever it is
        return e
    raise AssertionError("nothing was raised")


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _refused() -> None:
    raise ConnectionRefusedError(111, "Connection refused")


def _suppressed() -> None:
    try:
        _refused()
    except OSError:
        raise RuntimeError("listing failed") from None


def _caused() -> None:
    try:
        _refused()
    except OSError as e:
        raise RuntimeError("listing failed") from e


def _implicit() -> None:
    try:
        _refused()
    except OSError:
        raise RuntimeError("listing failed")  # noqa: B904 - the implicit context is what is tested


def _sentence() -> None:
    raise RuntimeError("Server failed to authenticate the request.")  # Azure's end with a period


@pytest.mark.parametrize(("fail", "text"), [
    (_suppressed, "RuntimeError: listing failed"),
    (_sentence, "RuntimeError: Server failed to authenticate the request"),  # callers go on with ". "
    (_caused, "RuntimeError: listing failed <- [Errno 111] Connection refused"),
    (_implicit, "RuntimeError: listing failed <- [Errno 111] Connection refused"),
])
def test_the_chain_is_quoted_as_a_traceback_shows_it(fail: Callable[[], None], text: str) -> None:
    assert service_error(_raised(fail))[0] == text


def test_a_probe_that_finds_nothing_listening_is_quoted_in_its_own_words() -> None:
    """``EndpointUnreachable`` is raised ``from None`` over the socket's ConnectionRefusedError: its words, no
    class name, no "[Errno 111] Connection refused" after them."""
    port = _unused_port()
    e = _raised(lambda: check_endpoint("s3://bucket/x", {"s3": {"endpoint_url": f"http://127.0.0.1:{port}"}}))
    assert service_error(e) == (f"nothing answered at the endpoint http://127.0.0.1:{port} (connection refused: "
                                f"nothing listens on port {port} of 127.0.0.1)", "endpoint")


def test_a_connection_string_keeps_its_account_and_endpoints_readable() -> None:
    connection = (f"DefaultEndpointsProtocol=https;AccountName=myaccount42;AccountKey={KEY};"
                  "BlobEndpoint=http://127.0.0.1:10000/myaccount42;EndpointSuffix=core.chinacloudapi.cn")
    sas = "SharedAccessSignature=sv=2022-11-02&ss=b&sig=c2lnbmF0dXJlc2lnbmF0dXJl"
    text = (f"at http://127.0.0.1:10000/myaccount42 for account myaccount42 (core.chinacloudapi.cn): key {KEY}, "
            "signature c2lnbmF0dXJlc2lnbmF0dXJl, whole string " + connection)
    assert redact(text, [connection, sas]) == (
        "at http://127.0.0.1:10000/myaccount42 for account myaccount42 (core.chinacloudapi.cn): key ***, "
        "signature ***, whole string ***")


def _dead_azure(port: int) -> tuple[str, dict[str, dict[str, str]]]:
    dead = f"http://127.0.0.1:{port}/myaccount42"
    connection = f"DefaultEndpointsProtocol=http;AccountName=myaccount42;AccountKey={KEY};BlobEndpoint={dead};"
    return dead, {"az": {"connection_string": connection}}


def test_an_input_store_where_nothing_answers_names_its_endpoint() -> None:
    """The endpoint of a connection string was masked with its key ("nothing answered at the endpoint ***")."""
    port = _unused_port()
    dead, options = _dead_azure(port)
    e = _raised(lambda: check_endpoint("az://c/in", options))
    text = str(listing_error("az://c/in", e, options))
    assert text == (f"cannot list the input az://c/in: nothing answered at the endpoint {dead} (connection "
                    f"refused: nothing listens on port {port} of 127.0.0.1). Nothing was run. {JOB_ENDPOINT_ADVICE}")
    assert KEY not in text


def test_planning_a_job_whose_input_store_does_not_answer(tmp_path: Path) -> None:
    """Planning (``parallelrun plan``, ``run_job``) reports it through the one listing error (``data/plan.py``
    used to build its own)."""
    pytest.importorskip("adlfs", reason="install the azure extra: pip install 'parallelrun[azure]'")
    port = _unused_port()
    dead, options = _dead_azure(port)
    spec = {"name": "dead-input", "entry_script": "score.py", "inputs": [{"type": "file", "path": "az://c/in"}],
            "storage_options": options}
    (tmp_path / "job.yml").write_text(json.dumps(spec))
    (tmp_path / "score.py").write_text("def run(mini_batch):\n    return list(mini_batch)\n")
    with pytest.raises(DatasetError) as info:
        plan_job(tmp_path / "job.yml")
    assert str(info.value) == (f"cannot list the input az://c/in: nothing answered at the endpoint {dead} "
                               f"(connection refused: nothing listens on port {port} of 127.0.0.1). Nothing was "
                               f"run. {JOB_ENDPOINT_ADVICE}")
