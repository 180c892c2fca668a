"""A big folder walked by a forked child (``data/walk_ahead.py``): the same lists, the same errors, and no
process left behind, whether the walk ends, fails or is abandoned."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

import pytest

from parallelrun.data import files as files_mod
from parallelrun.data import walk_ahead as wa
from parallelrun.errors import DatasetError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child is forked on Linux only")


_SINGLE_THREADED = wa._single_threaded


@pytest.fixture(autouse=True)
def _fork_despite_other_tests_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Earlier tests in the same pytest process leave daemon threads behind (fsspec's I/O loop, a store
    # proxy), so the driver's "no other thread" rule would silently walk in place and these tests would
    # test nothing. The child only lists and stats files: no lock those threads could hold.
    monkeypatch.setattr(wa, "_single_threaded", lambda: True)


def _children() -> set[int]:
    """This process's live children (zombies included: a child not reaped is a child left behind)."""
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
        return {int(x) for x in f.read().split()}


def _folder(root: Path, n: int = 300) -> Path:
    folder = root / "many"
    folder.mkdir()
    for i in range(n):
        (folder / f"f{i:04d}.txt").write_text("x" * (i % 7))
    (folder / "sub").mkdir()
    (folder / "sub" / "inner.txt").write_text("in")
    return folder


def _walk(folder: Path) -> list[tuple[str, int, int | str]]:
    return [f for chunk in files_mod.iter_file_chunks(str(folder), folder.parent) for f in chunk]


def test_the_child_lists_exactly_what_the_walk_in_place_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path)
    in_place = _walk(folder)
    forks: list[int] = []
    real_fork = os.fork
    monkeypatch.setattr(wa.os, "fork", lambda: forks.append(1) or real_fork())
    monkeypatch.setattr(wa, "MIN_DIR_BYTES", 0)  # every folder is worth a child
    monkeypatch.setattr(files_mod, "_CHUNK", 16)  # many lists through the pipe
    before = _children()
    ahead = _walk(folder)
    assert forks == [1]
    assert ahead == in_place  # paths, sizes, mtimes, order: the fingerprint cannot change
    assert len(ahead) == 301
    assert _children() == before  # the child ended and was reaped


def test_an_error_in_the_child_is_raised_in_the_driver_as_the_walk_raises_it(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path, 20)
    os.symlink("loop", folder / "loop")  # a symlink to itself: stat fails with ELOOP
    with pytest.raises(DatasetError) as in_place:
        _walk(folder)
    monkeypatch.setattr(wa, "MIN_DIR_BYTES", 0)
    before = _children()
    with pytest.raises(DatasetError) as ahead:
        _walk(folder)
    assert str(ahead.value) == str(in_place.value)
    assert "symbolic link that loops" in str(ahead.value)
    assert _children() == before


def test_a_walk_abandoned_early_kills_and_reaps_the_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path)
    monkeypatch.setattr(wa, "MIN_DIR_BYTES", 0)
    monkeypatch.setattr(files_mod, "_CHUNK", 4)
    before = _children()
    it = files_mod.iter_file_chunks(str(folder), tmp_path)
    first = next(it)
    assert len(first) == 4
    assert _children() != before  # the child is still walking (or blocked on the full pipe)
    it.close()  # what a plan dropped after its first batch does
    assert _children() == before


def test_a_driver_with_threads_walks_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path, 10)
    monkeypatch.setattr(wa, "MIN_DIR_BYTES", 0)
    monkeypatch.setattr(wa, "_single_threaded", _SINGLE_THREADED)  # the rule itself, this time
    monkeypatch.setattr(wa.os, "fork", lambda: pytest.fail("forked with another thread running"))
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert len(_walk(folder)) == 11
    finally:
        stop.set()
        t.join()


def test_a_small_folder_is_walked_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path, 10)
    monkeypatch.setattr(wa.os, "fork", lambda: pytest.fail("forked for a small folder"))
    assert len(_walk(folder)) == 11


def test_the_child_dies_with_a_driver_killed_by_sigkill(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    import psutil

    script = tmp_path / "driver.py"
    script.write_text(
        "import sys, time\n"
        "from parallelrun.data import walk_ahead as wa\n"
        "wa.MIN_DIR_BYTES = 0\n"
        "def slow(root):\n"  # one list, then a long stat: only the driver's death can end the child
        "    yield [(root, 1, 1)]\n"
        "    time.sleep(60)\n"
        "    yield [(root, 1, 1)]\n"
        "it = wa.walk_ahead(sys.argv[1], slow)\n"
        "next(it)\n"
        "print('walking', flush=True)\n"
        "time.sleep(60)\n")
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    children: list[psutil.Process] = []
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "walking"
        children = psutil.Process(driver.pid).children()
        [child] = children
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 10
        while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE  # PR_SET_PDEATHSIG
    finally:
        driver.kill()
        for c in children:  # nothing left behind, even when the assertion failed
            with contextlib.suppress(psutil.NoSuchProcess):
                c.kill()
