"""A storage failure while listing a dataset passes the service's own message through, with advice that
matches it (issue 12: "check endpoint and credentials" pointed the wrong way)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import pytest

from parallelrun import DatasetError
from parallelrun.workspace import Dataset, Datastore, Workspace


def _listing_error(ws: Workspace, store: Datastore) -> str:
    with pytest.raises(DatasetError) as info:
        Dataset.File.from_files(path=(store, "images/**"))
    return str(info.value)


@pytest.mark.azure
def test_wrong_key_shows_the_service_message_and_blames_the_credentials(tmp_path: Path, azurite: Any) -> None:
    ws = Workspace.create(tmp_path / "ws")
    container = f"c{uuid.uuid4().hex[:12]}"
    Datastore.register_azure_blob_container(ws, "good", container, azurite.account_name,
                                            account_key=azurite.account_key, endpoint=azurite.endpoint,
                                            create_if_not_exists=True)
    wrong = base64.b64encode(b"not the key" * 6).decode()
    bad = Datastore.register_azure_blob_container(ws, "bad", container, azurite.account_name, account_key=wrong,
                                                  endpoint=azurite.endpoint)
    text = _listing_error(ws, bad)
    assert "authenticat" in text.lower() or "403" in text, text  # Azurite's own words
    assert "credentials" in text and "endpoint" not in text.split("failed:", 1)[1].split(".")[-2], text
    assert wrong not in text


@pytest.mark.azure
@pytest.mark.slow  # the Azure SDK retries a refused connection with back-off for ~2 minutes
@pytest.mark.timeout(400)
def test_nothing_listening_blames_the_endpoint(tmp_path: Path, azurite: Any) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws = Workspace.create(tmp_path / "ws")
    dead = f"http://127.0.0.1:{port}/{azurite.account_name}"
    store = Datastore.register_azure_blob_container(ws, "dead", "c1", azurite.account_name,
                                                    account_key=azurite.account_key, endpoint=dead)
    text = _listing_error(ws, store)
    assert "endpoint" in text, text
