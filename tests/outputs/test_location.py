"""Output locations: parsing URLs, refusing what cannot work up front, full disks at assembly."""

from __future__ import annotations

import importlib.util
import pickle
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from output_backends import Backend

from parallelrun.errors import MissingExtraError, OutputError, UsageError
from parallelrun.outputs import OutputLocation, PartRecord, format_result


def test_local_paths_and_file_urls(tmp_path: Path) -> None:
    loc = OutputLocation.parse("out/x", base_dir=tmp_path)
    assert loc.is_local and loc.url == str(tmp_path / "out" / "x")
    assert OutputLocation.parse(f"file://{tmp_path}/y").url == str(tmp_path / "y")
    assert pickle.loads(pickle.dumps(loc)) == loc


def test_an_object_store_url_is_never_a_local_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loc = OutputLocation.parse("az://results/embed", base_dir=tmp_path,
                               storage_options={"az": {"account_name": "acct"}, "s3": {"anon": True}})
    assert (loc.protocol, loc.url, loc.is_local) == ("az", "az://results/embed", False)
    assert loc.storage_options == {"account_name": "acct"}  # the options of its own protocol
    assert loc.join("a.txt") == "az://results/embed/a.txt"
    assert list(tmp_path.iterdir()) == []  # no folder named "az:"


def test_output_options_are_keyed_or_the_filesystems_own_never_a_mix() -> None:
    """A mix used to keep the keyed part and drop the rest without a word."""
    own = {"account_name": "acct", "connection_string": "AccountName=acct;AccountKey=c2VjcmV0c2VjcmV0"}
    assert OutputLocation.parse("az://results/embed", storage_options=own).storage_options == own
    assert OutputLocation.parse("s3://b/out", storage_options={"client_kwargs": {"region_name": "x"}}) \
        .storage_options == {"client_kwargs": {"region_name": "x"}}  # a dict, yet not under a protocol
    assert OutputLocation.parse("s3://b/out", storage_options={"gcs": {"token": "t"}}).storage_options == {}
    with pytest.raises(UsageError) as info:
        OutputLocation.parse("az://results/embed", storage_options={"s3": {"anon": True}, **own})
    assert str(info.value) == (
        "the storage_options for the output az://results/embed mix options keyed by protocol (s3) with options "
        "under no protocol (account_name, connection_string), which would be ignored. Put those under their "
        'protocol too: {"az": {"account_name": ..., "connection_string": ...}}.')


@pytest.mark.parametrize(("output", "pattern"), [
    ("gs://bucket/out", r"cannot write to gs:// locations.*az://.*s3://"),
    ("s3://", r"names no container or bucket"),
    ("  ", r"output is empty"),
])
def test_bad_outputs_are_usage_errors(output: str, pattern: str) -> None:
    with pytest.raises(UsageError, match=pattern) as e:
        OutputLocation.parse(output)
    assert e.value.exit_code == 2


def test_a_missing_backend_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "s3fs" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"pip install 'parallelrun\[s3\]'") as e:
        OutputLocation.parse("s3://bucket/out")
    assert e.value.exit_code == 2


def test_an_output_that_cannot_be_created_fails_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    loc = OutputLocation.parse(str(tmp_path / "file.txt" / "out"))
    with pytest.raises(OutputError, match=r"cannot write to the output location .*file.txt/out.*Nothing was run"):
        loc.check_writable()


def test_free_space_is_compared_with_the_estimate(tmp_path: Path) -> None:
    loc = OutputLocation.parse(str(tmp_path / "out"))
    loc.check_writable(estimate_bytes=1024)
    with pytest.raises(OutputError, match=r"estimated at 909.5 TB.*Free at least"):
        loc.check_writable(estimate_bytes=10**15)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # the probe is gone


@pytest.mark.timeout(60)
def test_a_missing_bucket_is_an_output_error_naming_the_credentials(s3_backend: Backend) -> None:
    loc = OutputLocation.parse(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/out",
                               storage_options=s3_backend.storage_options)
    with pytest.raises(OutputError, match=r"cannot write to the output location s3://no-such-bucket.*credentials"):
        loc.check_writable()



def _unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("kind", [pytest.param("azure", marks=pytest.mark.azure),
                                  pytest.param("s3", marks=pytest.mark.s3)])
def test_an_output_store_where_nothing_answers_fails_within_seconds(
        kind: str, request: pytest.FixtureRequest) -> None:
    """The storage SDKs retry a refused connection with back-off (Azure took 82 s to report it here,
    botocore 5-9 s): ``check_writable`` tries a TCP connect first and names the endpoint at once."""
    backend: Backend = request.getfixturevalue(f"{kind}_backend")
    dead = f"http://127.0.0.1:{_unused_port()}"
    opts = dict(backend.storage_options)
    if kind == "azure":
        live = opts["connection_string"].split("BlobEndpoint=", 1)[1].split(";", 1)[0]
        dead += "/" + live.rstrip("/").rsplit("/", 1)[1]
        opts["connection_string"] = opts["connection_string"].replace(live, dead)
    else:
        opts["client_kwargs"] = {**opts["client_kwargs"], "endpoint_url": dead}
    loc = OutputLocation.parse(backend.url, storage_options=opts)
    t0 = time.monotonic()
    with pytest.raises(OutputError) as info:
        loc.check_writable()
    assert time.monotonic() - t0 < 10, str(info.value)
    text = str(info.value)
    assert f"cannot write to the output location {backend.url}" in text and "Nothing was run" in text, text
    assert f"nothing answered at the endpoint {dead} (connection refused" in text, text
    assert text.endswith("Nothing was run. Check the storage endpoint: is the storage service running, are its "
                         "host and port right? They come from the storage options (a connection string's "
                         "BlobEndpoint, an S3 endpoint_url) or the backend's environment variables "
                         "(AZURE_STORAGE_CONNECTION_STRING, AWS_ENDPOINT_URL)."), text
    assert "credentials" not in text and "EndpointUnreachable" not in text, text  # the probe's words say it all
    OutputLocation.parse(backend.url, storage_options=backend.storage_options).check_writable()  # the live one

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs: a real ENOSPC. Needs root (and mount allowed); skipped otherwise."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("fmt", ["text", "parquet"])
def test_a_full_disk_at_assembly_says_what_to_free_and_resume_finishes(small_disk: Path, tmp_path: Path,
                                                                       fmt: str) -> None:
    loc = OutputLocation.parse(str(small_disk / "out"))
    w = loc.part_writer(worker="w0", fmt=fmt, layout="file")
    records: list[PartRecord] = []
    for b in range(6):
        items = [f"{b}-{i:07d}-{'x' * 40}" for i in range(1500)]  # ~75 KB of text per batch
        if fmt == "parquet":
            import pandas as pd

            result = format_result(pd.DataFrame({"id": items}), action="append_row", fmt=fmt, batch_inputs=items)
        else:
            result = format_result(items, action="append_row", fmt=fmt, batch_inputs=items)
        records.append(w.write(batch=b, attempt=1, result=result))
    w.close()
    filler = small_disk / "filler"
    used = sum(r.length for r in records)
    filler.write_bytes(b"\0" * (1024 * 1024 - used - 16 * 1024))  # what is left: less than one more copy
    with pytest.raises(OutputError) as e:
        loc.assemble(records, file_name="out.bin", fmt=fmt, state_dir=tmp_path / "state", run_id="run-42",
                     keep_parts=True)
    msg = str(e.value)
    assert "no space left on the device" in msg and "Free space on the disk holding" in msg
    assert "`parallelrun resume run-42` finishes the job" in msg
    assert sorted(p.name for p in (small_disk / "out").iterdir()) == [".parts"]  # no temporary left behind
    assert all(loc.verify(r) for r in records)  # every batch's rows kept
    filler.unlink()  # the user frees space
    final = loc.assemble(records, file_name="out.bin", fmt=fmt, state_dir=tmp_path / "state", run_id="run-42")
    data = Path(final).read_bytes()
    if fmt == "text":
        assert data.count(b"\n") == 9000
    else:
        import pyarrow.parquet as pq

        assert pq.read_table(final).num_rows == 9000


@pytest.mark.parametrize("name", [".parts/seg-node0.process000-00000.txt", 'odd "name"\\with\né\U0001F600'])
def test_a_part_record_json_is_exactly_what_json_dumps_writes(name: str) -> None:
    """The record's text is written out by hand (the assembly hashes it into its resumable state): it must
    stay json.dumps' text, so a state saved before this change still matches after it."""
    import json
    import pickle

    rec = PartRecord(batch=3, name=name, offset=10, length=20, rows=5, checksum="crc32:0000abcd")
    ref = {"batch": 3, "name": name, "offset": 10, "length": 20, "rows": 5, "checksum": "crc32:0000abcd"}
    assert rec.to_json() == json.dumps(ref, separators=(",", ":"))
    assert PartRecord.from_json(rec.to_json()) == rec
    assert pickle.loads(pickle.dumps(rec)) == rec


def test_parts_are_checked_with_the_algorithm_their_record_names(tmp_path: Path) -> None:
    """Parts are hashed with XXH3 now; a run started by an older version recorded CRC-32, and its resume
    still checks those parts with CRC-32: an intact part verifies, a changed byte does not."""
    import zlib

    from parallelrun.outputs._records import PartHash, checksum_of

    loc = OutputLocation.parse(str(tmp_path / "out"))
    data = bytes(range(256)) * 1000
    part = tmp_path / "out" / ".parts" / "part-00000003.a1.txt"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"head" + data)
    new = checksum_of(data)
    old = f"crc32:{zlib.crc32(data):08x}"
    assert new.startswith("xxh3:") and len(new) == len("xxh3:") + 16
    running = PartHash()
    for i in range(0, len(data), 1000):
        running.update(memoryview(data)[i:i + 1000])
    assert running.text() == new
    for checksum in (new, old):
        rec = PartRecord(batch=3, name=".parts/part-00000003.a1.txt", offset=4, length=len(data), rows=1000,
                         checksum=checksum)
        assert loc.verify(rec)
        assert checksum_of(data, like=checksum) == checksum
    part.write_bytes(b"head" + data[:-1] + b"\x00")
    for checksum in (new, old):
        rec = PartRecord(batch=3, name=".parts/part-00000003.a1.txt", offset=4, length=len(data), rows=1000,
                         checksum=checksum)
        assert not loc.verify(rec)
