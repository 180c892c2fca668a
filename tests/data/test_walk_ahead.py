"""A big folder or tree walked by a forked child (``data/walk_ahead.py``): the same lists, the same errors,
and no process left behind, whether the walk ends, fails or is abandoned."""

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
        "class Slow:\n"  # one list, then a long stat: only the driver's death can end the child
        "    root = sys.argv[1]\n"
        "    next_folder = root\n"
        "    def split(self):\n"
        "        return [self]\n"
        "    def folder(self):\n"
        "        yield [(self.root, 1, 1)]\n"
        "        time.sleep(60)\n"
        "        yield [(self.root, 1, 1)]\n"
        "it = wa.walk_ahead(Slow())\n"
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


# --- trees: walked in place for their first files, then by a child from the next folder on ---------------
def _tree(root: Path, folders: int = 12, per_folder: int = 5) -> Path:
    tree = root / "tree"
    for d in range(folders):
        sub = tree / f"d{d:02d}"
        (sub / "deeper").mkdir(parents=True)
        for i in range(per_folder):
            (sub / f"f{i}").write_text("x" * (d + i))
        (sub / "deeper" / "leaf").write_text("leaf")
    (tree / "top.txt").write_text("top")
    return tree


def test_a_tree_goes_to_a_child_between_two_folders_and_lists_the_same(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _tree(tmp_path)
    in_place = _walk(tree)
    listed_when_forked: list[int] = []
    real_fork = os.fork
    monkeypatch.setattr(wa.os, "fork", lambda: listed_when_forked.append(len(opened)) or real_fork())
    opened: list[str] = []
    real_folder = files_mod.TreeWalk.folder

    def folder(self: files_mod.TreeWalk):  # type: ignore[no-untyped-def]
        opened.append(self.next_folder)
        return real_folder(self)

    monkeypatch.setattr(files_mod.TreeWalk, "folder", folder)
    monkeypatch.setattr(wa, "IN_PLACE_FILES", 8)  # two folders of files in place, then the children
    before = _children()
    ahead = _walk(tree)
    assert ahead == in_place  # paths, sizes, mtimes, order: the fingerprint cannot change
    assert len(ahead) == 1 + 12 * 6
    # The root, d00, d00/deeper, d01 (1 + 5 + 1 + 5 files) in place; the rest by two children side by side.
    assert listed_when_forked == [4, 4]
    assert _children() == before


@pytest.mark.parametrize("walkers", [1, 3])
def test_any_number_of_walkers_gives_the_same_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    walkers: int) -> None:
    tree = _tree(tmp_path)
    in_place = _walk(tree)
    monkeypatch.setattr(wa, "WALKERS", walkers)
    monkeypatch.setattr(wa, "IN_PLACE_FILES", 1)
    monkeypatch.setattr(files_mod, "_CHUNK", 2)  # several lists per folder, several messages per subtree
    before = _children()
    assert _walk(tree) == in_place
    assert _children() == before


def test_the_first_error_in_walk_order_is_raised_after_every_list_before_it(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _tree(tmp_path)
    os.symlink("loop", tree / "d05" / "loop")  # walked by one child...
    os.symlink("loop", tree / "d02" / "loop")  # ...and this one, earlier in walk order, by the other

    def lists_then_error() -> tuple[list[tuple[str, int, int | str]], str]:
        got: list[tuple[str, int, int | str]] = []
        with pytest.raises(DatasetError) as e:
            for chunk in files_mod.iter_file_chunks(str(tree), tmp_path):
                got.extend(chunk)
        return got, str(e.value)

    in_place = lists_then_error()
    monkeypatch.setattr(wa, "IN_PLACE_FILES", 1)
    before = _children()
    assert lists_then_error() == in_place
    assert "d02/loop is a symbolic link that loops" in in_place[1]
    assert _children() == before


def test_a_big_folder_inside_a_tree_goes_to_a_child_before_it_is_listed(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _tree(tmp_path, folders=3)
    big = tree / "d01"
    monkeypatch.setattr(wa, "MIN_DIR_BYTES", os.stat(big).st_size + 4096)
    for i in range(400):  # its directory entry grows past the threshold; the root's and d00's stay small
        (big / f"many{i:04d}-{'x' * 40}").write_text("m")
    assert os.stat(tree).st_size < wa.MIN_DIR_BYTES <= os.stat(big).st_size
    in_place = [f for chunk in files_mod.TreeWalk(str(tree)) for f in chunk]  # no fork at all
    forks: list[int] = []
    real_fork = os.fork
    monkeypatch.setattr(wa.os, "fork", lambda: forks.append(1) or real_fork())
    assert _walk(tree) == in_place
    assert forks == [1, 1]  # before d01 (its 400 names were not stat'ed in place): d01 and d02, one child each


@pytest.mark.parametrize("fault", ["symlink-loop", "non-utf8-name"])
def test_an_error_deep_in_a_tree_walked_by_the_child_is_the_in_place_error(tmp_path: Path, fault: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _tree(tmp_path)
    last = tree / "d11" / "deeper"
    if fault == "symlink-loop":
        os.symlink("loop", last / "loop")
    else:
        with open(os.path.join(os.fsencode(last), b"caf\xe9.txt"), "w") as f:
            f.write("latin-1")
    with pytest.raises(DatasetError) as in_place:
        _walk(tree)
    forks: list[int] = []
    real_fork = os.fork
    monkeypatch.setattr(wa.os, "fork", lambda: forks.append(1) or real_fork())
    monkeypatch.setattr(wa, "IN_PLACE_FILES", 1)
    before = _children()
    with pytest.raises(DatasetError) as ahead:
        _walk(tree)
    assert forks == [1, 1]
    assert str(ahead.value) == str(in_place.value)
    assert ("symbolic link that loops" if fault == "symlink-loop" else "not valid UTF-8") in str(ahead.value)
    assert _children() == before


def test_a_small_tree_is_walked_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _tree(tmp_path)  # 73 files in 25 small folders
    monkeypatch.setattr(wa.os, "fork", lambda: pytest.fail("forked for a small tree"))
    assert len(_walk(tree)) == 73


def test_a_walk_that_may_not_wait_says_pending_and_still_gives_the_same_lists(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The child stops before its second folder until the test lets it go on: meanwhile the reader must
    # answer at once with a Pending naming the pipe to wait on, never block (planning runs in the driver).
    import select
    import time

    root = tmp_path / "tree"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(40):
            (root / name / f"{name}{i:02d}.txt").write_text(name * (i % 5))
    in_place = _walk(root)
    gate = tmp_path / "gate"
    driver = os.getpid()
    real_folder = files_mod.TreeWalk.folder

    def slow_folder(self: files_mod.TreeWalk):  # type: ignore[no-untyped-def]
        if os.getpid() != driver and str(self.next_folder).endswith("/b"):
            deadline = time.monotonic() + 20
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        yield from real_folder(self)

    monkeypatch.setattr(files_mod.TreeWalk, "folder", slow_folder)
    monkeypatch.setattr(wa, "MIN_DIR_BYTES", 0)
    monkeypatch.setattr(files_mod, "_CHUNK", 16)
    before = _children()
    got: list[tuple[str, int, int | str]] = []
    pendings = 0
    for chunk in files_mod.iter_file_chunks_nowait(str(root), tmp_path):
        if isinstance(chunk, wa.Pending):
            pendings += 1
            if len(got) == 40 and not gate.exists():  # all of a/ read, b/ held back: nothing is waited for
                t0 = time.monotonic()
                assert not select.select([chunk.fd], [], [], 0.2)[0]
                assert time.monotonic() - t0 >= 0.15
                gate.touch()
            select.select([chunk.fd], [], [], 5)  # what the driver loop does, with its workers' pipes
            continue
        got.extend(chunk)
    assert gate.exists() and pendings >= 1
    assert got == in_place and len(got) == 80
    assert _children() == before


# --- started early, while ``parallelrun run`` is still starting up (``start_early``) ---------------------
def test_a_walk_started_early_is_adopted_and_lists_exactly_what_the_walk_in_place_lists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path)
    in_place = _walk(folder)
    monkeypatch.setattr(wa, "MIN_DIR_BYTES", 0)
    monkeypatch.setattr(files_mod, "_CHUNK", 16)
    before = _children()
    assert files_mod.walk_early(folder.name, tmp_path)  # relative to the job folder, as planning resolves it
    assert wa._early and _children() != before  # the child walks before anyone asked
    forks: list[int] = []
    monkeypatch.setattr(wa.os, "fork", lambda: forks.append(1) or pytest.fail("forked again"))
    assert _walk(folder) == in_place  # paths, sizes, mtimes, order: the fingerprint cannot change
    assert not wa._early and not forks
    assert _children() == before  # adopted, ended and reaped


def test_a_walk_started_early_that_nobody_adopts_is_killed_and_reaped(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path)
    monkeypatch.setattr(wa, "MIN_DIR_BYTES", 0)
    before = _children()
    assert files_mod.walk_early(str(folder), tmp_path)
    assert not files_mod.walk_early(str(folder), tmp_path)  # one child per folder
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("a")
    assert _walk(other) == [(str(other / "a.txt"), 1, (other / "a.txt").stat().st_mtime_ns)]  # not adopted
    assert _children() != before
    wa.discard_early()
    assert not wa._early and _children() == before


def test_a_walk_resumed_mid_tree_does_not_adopt_the_early_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path)
    monkeypatch.setattr(wa, "MIN_DIR_BYTES", 0)
    before = _children()
    assert files_mod.walk_early(str(folder), tmp_path)
    walk = files_mod.TreeWalk(str(folder))
    first = list(walk.folder())  # the root listed in place: the walk goes on from "sub"
    rest = [f for chunk in wa.walk_ahead(walk) for f in chunk]
    assert [f for chunk in first for f in chunk] + rest == _walk(folder)
    assert not wa._early and _children() == before  # the early child was killed, not read


def test_small_inputs_urls_and_globs_are_not_walked_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path, 10)
    monkeypatch.setattr(wa.os, "fork", lambda: pytest.fail("forked for an input not worth it"))
    assert not files_mod.walk_early(str(folder), tmp_path)  # a small folder: its directory entry says so
    assert not files_mod.walk_early(str(folder / "*.txt"), tmp_path)
    assert not files_mod.walk_early("s3://bucket/prefix", tmp_path)
    assert not files_mod.walk_early(str(folder / "f0001.txt"), tmp_path)
    assert not files_mod.walk_early(str(tmp_path / "missing"), tmp_path)
