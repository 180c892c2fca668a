"""Planning streamed into the journal while dispatch runs; the file walk; grouped commits.

What a user relies on: a run killed while it was still planning resumes with every item exactly once (and
refuses if the part already planned changed); the walk's order is the same however big a folder is; and a
group of results committed together is each committed once, with its output.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parallelrun.config import validate_spec
from parallelrun.data import files as files_mod
from parallelrun.data.batches import FileBatch
from parallelrun.data.plan import Plan, PlanFeed
from parallelrun.errors import ResumeError
from parallelrun.journal import Journal, Success


def _spec(path: Path, size: int = 3) -> object:
    return validate_spec({"name": "plan-test", "entry_script": "e.py", "inputs": [{"type": "file", "path": str(path)}],
                          "mini_batch_size": size})


def _tree(root: Path, dirs: int = 4, per_dir: int = 7) -> list[str]:
    out = []
    for d in range(dirs):
        sub = root / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            p = sub / f"f{i:02d}.txt"
            p.write_text(f"{d}-{i}\n")
            out.append(str(p))
    (root / "top.txt").write_text("top\n")
    return [str(root / "top.txt"), *out]  # a folder's files come before its subfolders


def _all_batches(journal: Journal) -> list[tuple[int, tuple[str, ...]]]:
    out = []
    for b in journal.pending_descriptors(0, 10_000):
        assert isinstance(b, FileBatch)
        out.append((b.index, b.paths))
    return out


def test_plan_feed_writes_the_same_plan_in_steps(tmp_path: Path) -> None:
    expected = _tree(tmp_path / "data")
    spec = _spec(tmp_path / "data")
    whole = [b.paths for b in Plan(spec, tmp_path).batches()]
    assert [p for paths in whole for p in paths] == expected
    with Journal(tmp_path / "j.sqlite") as j:
        feed = PlanFeed(Plan(spec, tmp_path), j)
        steps = 0
        while not feed.done:
            feed.step(seconds=0.0)  # one batch per step
            steps += 1
        assert steps >= len(whole)
        assert [paths for _, paths in _all_batches(j)] == whole
        meta = j.meta()
        assert meta["plan"]["complete"] is True and meta["files"] == len(expected)
        assert meta["input_fingerprint"] == meta["plan"]["fingerprint"]


def test_a_plan_cut_short_is_continued_on_resume(tmp_path: Path) -> None:
    _tree(tmp_path / "data")
    spec = _spec(tmp_path / "data")
    whole = [b.paths for b in Plan(spec, tmp_path).batches()]
    with Journal(tmp_path / "j.sqlite") as j:
        feed = PlanFeed(Plan(spec, tmp_path), j)
        for _ in range(3):  # the driver is killed after three steps
            feed.step(seconds=0.0)
        assert not j.meta()["plan"]["complete"] and "input_fingerprint" not in j.meta()
        resumed = PlanFeed(Plan(spec, tmp_path), j, resume=True)
        while not resumed.done:
            resumed.step()
        assert [paths for _, paths in _all_batches(j)] == whole  # nothing twice, nothing missing


def test_resume_refuses_when_the_planned_part_changed(tmp_path: Path) -> None:
    _tree(tmp_path / "data", per_dir=30)
    spec = _spec(tmp_path / "data")
    with Journal(tmp_path / "j.sqlite") as j:
        feed = PlanFeed(Plan(spec, tmp_path), j)
        feed.step(seconds=0.0)
        (tmp_path / "data" / "top.txt").write_text("changed, and longer\n")  # already planned
        resumed = PlanFeed(Plan(spec, tmp_path), j, resume=True)
        with pytest.raises(ResumeError, match="inputs changed"):
            while not resumed.done:
                resumed.step()


@pytest.mark.parametrize("block_chars", [64 * 1024, 12])  # 12: the runs are merged a few names at a time
def test_huge_folders_are_listed_in_packed_runs_in_the_same_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  block_chars: int) -> None:
    folder = tmp_path / "flat"
    folder.mkdir()
    names = [f"x{i:04d}" for i in range(0, 500, 7)] + [f"a{i}" for i in range(40)] + ["B", "_", "z-1"]
    for n in names:
        (folder / n).write_text(n)
    (folder / "sub").mkdir()
    (folder / "sub" / "inner").write_text("in")
    small = [p for chunk in files_mod.iter_file_chunks(str(folder), tmp_path) for p, _, _ in chunk]
    monkeypatch.setattr(files_mod, "_BIG_DIR", -1)  # every folder counts as huge...
    monkeypatch.setattr(files_mod, "_RUN", 16)  # ...and is sorted in runs of 16 names, then merged
    monkeypatch.setattr(files_mod, "_CHUNK", 5)
    monkeypatch.setattr(files_mod, "_BLOCK_CHARS", block_chars)
    big = [p for chunk in files_mod.iter_file_chunks(str(folder), tmp_path) for p, _, _ in chunk]
    expected = [str(folder / n) for n in sorted(names)] + [str(folder / "sub" / "inner")]
    assert small == expected
    assert big == expected


def test_walk_follows_file_symlinks_but_not_folder_symlinks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "real" / "a.txt").write_text("a")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.txt").write_text("bb")
    os.symlink(outside / "b.txt", data / "link-to-file.txt")
    os.symlink(outside, data / "link-to-dir")
    os.symlink(tmp_path / "missing", data / "dangling")
    found = {os.path.basename(p): size for chunk in files_mod.iter_file_chunks(str(data), tmp_path)
             for p, size, _ in chunk}
    assert found == {"link-to-file.txt": 2, "a.txt": 1}


def test_grouped_commits_store_each_part_record_once(tmp_path: Path) -> None:
    from parallelrun.outputs import PartRecord

    with Journal(tmp_path / "j.sqlite") as j:
        j.add_planned([FileBatch(i, (f"f{i}",), 1) for i in range(4)], {"plan": {"batches": 4}})

        def ok(i: int, name: str) -> Success:
            return Success(i, 1, "w", 0.1, 1, 0, [], PartRecord(i, name, 0, 2, 1, "crc32:0"))

        assert j.commit_successes([ok(0, "a"), ok(2, "c"), ok(2, "again")]) == [True, True, False]
        assert j.commit_successes([ok(0, "dup"), ok(1, "b")]) == [False, True]
        assert [(r.batch, r.name) for r in j.iter_parts()] == [(0, "a"), (1, "b"), (2, "c")]
        assert [b.index for b in j.pending_descriptors(0, 10)] == [3]
        c = j.counts()
        assert (c.batches_succeeded, c.batches_pending, c.items_succeeded) == (3, 1, 3)


@pytest.mark.timeout(120)
def test_batches_planned_run_and_commit_while_a_slow_walk_is_pending(tmp_path: Path) -> None:
    # The forked walker lists data/a, then holds data/b back until a mini-batch has run (the entry script
    # drops a gate file) or 30 s pass. A driver that waited on the walker's pipe before dispatching would
    # never run one: the walker would report the 30 s timeout. Then the walker is slow for another second,
    # during which a driver that spun (planning steps back to back) would take thousands of steps.
    import subprocess
    import sys
    import textwrap

    from engine_helpers import make_job

    job = make_job(tmp_path, """
        import os
        from pathlib import Path
        def init():
            pass
        def run(mini_batch):
            (Path(__file__).resolve().parents[1] / "gate").touch()
            return [os.path.basename(p) for p in mini_batch]
    """, n_files=0, inputs=[{"type": "file", "path": "data"}], mini_batch_size=3)
    names = [f"{d}{i:02d}.txt" for d in "ab" for i in range(30)]
    for n in names:
        (tmp_path / "data" / n[0]).mkdir(exist_ok=True)
        (tmp_path / "data" / n[0] / n).write_text(n)
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from parallelrun import run_job
        from parallelrun.data import files, walk_ahead
        from parallelrun.data import plan as plan_mod

        root, me = Path({str(tmp_path)!r}), os.getpid()
        real_folder, real_step = files.TreeWalk.folder, plan_mod.PlanFeed.step
        steps = []

        def slow_folder(self):
            if os.getpid() != me and str(self.next_folder).endswith("/b"):
                deadline = time.monotonic() + 30
                while not (root / "gate").exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                (root / "walker").write_text("gate" if (root / "gate").exists() else "timeout")
                time.sleep(1.0)
            yield from real_folder(self)

        def counted_step(self, *a, **kw):
            steps.append(1)
            return real_step(self, *a, **kw)

        files.TreeWalk.folder = slow_folder
        plan_mod.PlanFeed.step = counted_step
        walk_ahead.MIN_DIR_BYTES = 0
        walk_ahead._single_threaded = lambda: True
        r = run_job({str(job.job)!r}, workspace={str(job.ws)!r}, progress="quiet")
        print("RUN", r.status, len(steps))
    """))
    res = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    _, status, steps = res.stdout.split()
    assert status == "Completed"
    assert (tmp_path / "walker").read_text() == "gate"  # a batch ran while the walk was pending
    assert int(steps) < 200, f"{steps} planning steps: the driver spun while the walker was slow"
    assert job.lines() == names  # every file exactly once, in walk order


def test_a_backend_that_cannot_watch_the_walkers_pipe_waits_in_short_slices() -> None:
    # Ray's wait cannot include a pipe: while planning waits for the walk, its waits are cut short (and
    # skipped once the pipe is readable) so the walk's lists are planned promptly, without a spin.
    from parallelrun.execution import pool

    waits: list[float] = []

    class Blind(pool.WorkerPool[object]):
        def start(self) -> None: ...
        def cancel(self) -> None: ...
        def shutdown(self) -> None: ...
        def _spawn_replacement(self, name: str) -> str | None: return None
        def _send(self, name: str, batch: object, attempt: int) -> None: ...  # type: ignore[override]
        def _forget(self, name: str) -> None: ...
        def _wait(self, timeout: float, events: list) -> None:  # type: ignore[type-arg]
            waits.append(timeout)

    ex = Blind(timeout=60)
    r, w = os.pipe()
    try:
        ex.poll(0.25)
        ex.wake_fd = r
        ex.poll(0.25)
        os.write(w, b"x")
        ex.poll(0.25)
    finally:
        os.close(r)
        os.close(w)
    assert waits == [0.25, pool._WAKE_SLICE, 0.0]
