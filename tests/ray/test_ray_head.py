"""The Ray backend against a real head started with `ray start --head` (one per module).

Drivers run in this process (``run_job`` connects with ``ray.init`` and disconnects at the end) unless a
test has to kill or outlive the driver, in which case it is a ``python -m parallelrun`` subprocess.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from ray_jobs import (
    PYTHON,
    RayHead,
    assert_each_once,
    committed,
    file_rows,
    make_job,
    only_run_dir,
    output_lines,
    pids_alive,
    report_rows,
    reset_state,
    start_driver,
    started,
    wait_until,
)

import ray
from parallelrun import resume_run, run_job
from parallelrun.errors import DatasetError

pytestmark = pytest.mark.ray

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(job: Path, ws: Path, compute: str, *overrides: str):  # type: ignore[no-untyped-def]
    return run_job(job, overrides=[f"compute={compute}", *overrides], workspace=ws, progress="quiet")


# --- same output as the local executor ----------------------------------------------------------------
@pytest.mark.timeout(120)
def test_file_job_gives_the_local_output_and_logs_layout(ray_head: RayHead, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", files=15)
    local = _run(job, tmp_path / "ws", "local")
    expected = Path(local.output_file).read_bytes()
    reset_state(job.parent)

    t0 = time.monotonic()
    res = _run(job, tmp_path / "ws", ray_head.address)
    print(f"\nfile job on Ray: {time.monotonic() - t0:.1f}s (local: {local.wall_seconds:.1f}s)")

    assert (res.status, res.exit_code) == ("Completed", 0), res.summary()
    assert Path(res.output_file).read_bytes() == expected
    assert_each_once(output_lines(res), file_rows(15))
    assert res.counts["items_succeeded"] == 15 and res.counts["batches_succeeded"] == 8
    # The workers really were Ray actors of this head (not a local Ray instance, not local processes).
    runs = started(job.parent)
    assert {gcs.rsplit(":", 1)[1] for _, _, _, gcs in runs} == {str(ray_head.port)}
    # The logs layout of a local run: per node, per process, under the run's folder.
    agents = {row["worker"] for row in report_rows(res.record.path)}
    assert agents and agents <= {"node0.process000", "node0.process001"}, agents
    logs = res.record.logs_dir
    for agent in agents:
        proc = agent.split(".")[1]
        assert f"init in {agent}" in (logs / "user" / "stdout" / "node0" / f"{proc}.stdout.txt").read_text()
        assert f"init in {agent}" in (logs / "user" / "entry_script_log" / "node0" / f"{proc}.log.txt").read_text()
    assert "Completed" in (logs / "job_result.txt").read_text()
    # Ray's start-up is timed in the driver's log, and the session ends with the run.
    driver = (logs / "sys" / "driver.txt").read_text()
    assert re.search(r"Ray start-up: connected in [\d.]+ s, 2 workers requested after [\d.]+ s", driver), driver
    assert re.search(r"Ray start-up: (every worker|worker node0.process00\d) ready [\d.]+ s after", driver), driver
    assert "Ray: workers stopped in" in driver
    # On a running cluster the actors are requested before the driver's own start-up work (the run's first
    # planning step, the output checks), and started (init()) after it.
    requested = driver.index("workers requested after")
    assert requested < driver.index(f"run {res.record.id} started:") < driver.index("Ray start-up: workers started")
    assert not ray.is_initialized()


def _actors(address: str) -> Counter[str]:
    """The states of every parallelrun actor the head ever had (dead ones stay in its table)."""
    ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    try:
        return Counter(a["State"] for a in ray._private.state.actors().values() if a["ActorClassName"] == "RayWorker")
    finally:
        ray.shutdown()


@pytest.mark.timeout(120)
def test_an_empty_dataset_fails_before_any_actor_and_leaves_no_run(ray_head: RayHead, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", files=0, mini_batch_size=2)  # its data folder holds no file
    before = _actors(ray_head.address)

    with pytest.raises(DatasetError, match="the dataset is empty: data holds no file to process"):
        _run(job, tmp_path / "ws", ray_head.address)

    assert not ray.is_initialized()
    assert not (tmp_path / "ws" / "runs").exists() or not any((tmp_path / "ws" / "runs").iterdir())
    # The first planning step comes before the actors are requested (runner._request_early): none was made.
    assert _actors(ray_head.address) == before



@pytest.mark.timeout(120)
def test_an_unwritable_output_stops_the_run_and_the_actors_requested_for_it(ray_head: RayHead, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", files=3)
    (job.parent / "taken").write_text("a file, not a folder")
    before = _actors(ray_head.address)

    res = run_job(job, overrides=[f"compute={ray_head.address}", "output=taken/out"], workspace=tmp_path / "ws",
                  progress="quiet")

    assert (res.status, res.exit_code) == ("Failed", 1), res.summary()
    assert "cannot write to the output location" in res.record.reason and "Nothing was run" in res.record.reason
    assert not ray.is_initialized()
    assert not (job.parent / "state" / "pids").exists()  # no init() ran: the actors never got their config
    # Its two actors had been requested (output checks come after, runner._request_early); none outlived it.
    wait_until(lambda: (_actors(ray_head.address) - before)["ALIVE"] == 0, 30, "the requested actors to end")
    after = _actors(ray_head.address) - before
    assert after["DEAD"] == 2 and sum(after.values()) == 2, after

@pytest.mark.timeout(120)
def test_tabular_csv_job_gives_the_local_output(ray_head: RayHead, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", csv_rows=150)
    local = _run(job, tmp_path / "ws", "local")
    expected = Path(local.output_file).read_bytes()

    res = _run(job, tmp_path / "ws", ray_head.address)

    assert res.status == "Completed", res.summary()
    assert res.counts["items_succeeded"] == 150 and res.counts["batches"] > 2
    assert Path(res.output_file).read_bytes() == expected


@pytest.mark.slow  # ~20 s; the tabular CSV job above covers tabular input on Ray in `make test`
@pytest.mark.timeout(180)
def test_iris_example_gives_the_local_output(ray_head: RayHead, tmp_path: Path) -> None:
    for module in ("sklearn", "skl2onnx", "onnxruntime"):
        pytest.importorskip(module, reason="install the examples extra: pip install -e '.[examples]'")
    folder = tmp_path / "iris"
    shutil.copytree(EXAMPLES / "iris", folder, ignore=shutil.ignore_patterns("data", "models", "out", "__pycache__"))
    subprocess.run([PYTHON, "make_data.py", "--repeat", "3"], cwd=folder, check=True, capture_output=True,
                   timeout=120)
    job = folder / "job.yml"
    local = _run(job, tmp_path / "ws", "local")
    expected = Path(local.output_file).read_bytes()

    res = _run(job, tmp_path / "ws", ray_head.address)

    assert res.status == "Completed", res.summary()
    assert res.counts["items_succeeded"] == 450
    assert Path(res.output_file).read_bytes() == expected


# --- crash cases: what goes wrong in the entry script, and what the job does --------------------------
CRASH_CASES = [
    # (MODE, job fields, job status, attempts of the batch holding f005, failed items, driver log says)
    ("exit_once", {}, "Completed", 2, 0, "died while running mini-batch 2: ActorDiedError"),
    # The hang variants wait out run_invocation_timeout on purpose (15-25 s each); the local executor's
    # crash table covers the same behaviour in `make test`: these run in `make test-all`.
    pytest.param("hang_once", {"run_invocation_timeout": 6}, "Completed", 2, 0,
                 "run() on mini-batch 2 exceeded run_invocation_timeout=6s", marks=pytest.mark.slow),
    # Isolation: after its 2 attempts, batch 2 (f004, f005) is split; f004 alone succeeds (attempt 3),
    # f005 alone hangs again (attempt 4) and is the one failed item.
    pytest.param("hang_always", {"run_invocation_timeout": 6, "run_max_try": 2, "allowed_failed_count": 0}, "Failed",
                 4, 1, "run() on mini-batch 2 exceeded run_invocation_timeout=6s", marks=pytest.mark.slow),
    pytest.param("hang_always_no_isolation", {"run_invocation_timeout": 6, "run_max_try": 2, "allowed_failed_count": 0,
                                              "isolate_failures": False}, "Failed", 2, 2,
                 "run() on mini-batch 2 exceeded run_invocation_timeout=6s", marks=pytest.mark.slow),
]


@pytest.mark.timeout(150)
@pytest.mark.parametrize(("mode", "fields", "status", "attempts", "n_failed", "log_text"), CRASH_CASES,
                         ids=[str(c.values[0] if hasattr(c, "marks") else c[0]) for c in CRASH_CASES])
def test_crash_cases(ray_head: RayHead, tmp_path: Path, mode: str, fields: dict[str, object], status: str,
                     attempts: int, n_failed: int, log_text: str) -> None:
    job = make_job(tmp_path / "job", files=10, env={"MODE": mode.removesuffix("_no_isolation"), "TRIGGER": "f005.txt"},
                   **fields)

    res = _run(job, tmp_path / "ws", ray_head.address)

    assert res.status == status, res.summary()
    rows = {int(r["batch"]): r for r in report_rows(res.record.path)}
    assert int(rows[2]["attempts"]) == attempts
    assert res.counts["items_failed"] == n_failed
    assert log_text in (res.record.logs_dir / "sys" / "driver.txt").read_text()
    failed = [json.loads(line) for line in
              (res.record.logs_dir / "user" / "error" / "failed_items.jsonl").read_text().splitlines()]
    assert sorted(Path(f["input"]).name for f in failed) == ["f004.txt", "f005.txt"][2 - n_failed:]
    if n_failed:
        assert {(f["exception"], f["attempts"]) for f in failed} == {("TimeoutError", attempts)}
        assert "allowed_failed_count exceeded" in (res.reason or "")
    if n_failed == 1:  # the stack captured before the kill: where run() was sleeping
        assert "time.sleep(600)" in failed[0]["traceback"] and ", in run" in failed[0]["traceback"]
    # Every other item exactly once, whatever happened to the failing batch.
    lost = {"f004.txt: item 4", "f005.txt: item 5"} if n_failed == 2 else {"f005.txt: item 5"} if n_failed else set()
    assert_each_once(output_lines(res), [r for r in file_rows(10) if r not in lost])


@pytest.mark.timeout(90)
def test_init_failing_everywhere_fails_the_job_with_the_user_traceback(ray_head: RayHead, tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", files=4, env={"MODE": "init_fails"})

    res = _run(job, tmp_path / "ws", ray_head.address)

    assert (res.status, res.exit_code) == ("Failed", 1)
    assert "init() failed in every worker" in (res.reason or "")
    assert "ValueError: no model here" in (res.reason or "")
    assert "score.py" in (res.reason or "")  # the user's own frame


# --- the driver killed, then resumed against the same cluster ----------------------------------------
@pytest.mark.slow  # ~10 s; the local SIGKILL-resume tests run in `make test`; CI runs it (make test-slow)
@pytest.mark.timeout(150)
def test_driver_sigkill_then_resume_gives_every_item_once(ray_head: RayHead, tmp_path: Path) -> None:
    n = 40
    job = make_job(tmp_path / "job", files=n, env={"SLEEP": "0.3"})
    ws = tmp_path / "ws"
    driver = start_driver(job, ws, "--compute", ray_head.address)
    try:
        wait_until(lambda: (ws / "runs").exists() and any((ws / "runs").iterdir()), 60, "the run folder", driver)
        run_dir = only_run_dir(ws)
        wait_until(lambda: committed(run_dir / "journal.sqlite") >= 4, 90, "4 committed mini-batches", driver)
    finally:
        driver.kill()  # SIGKILL: no clean-up of any kind in the driver
        driver.wait(10)
    done_before = committed(run_dir / "journal.sqlite")
    assert done_before < n // 2, "the driver finished before it could be killed mid-run; slow the job down"
    # Actors are owned by the driver: Ray kills them when it dies, so nothing keeps burning CPU.
    actor_pids = [int(p.name) for p in (job.parent / "state" / "pids").iterdir()]
    wait_until(lambda: not pids_alive(actor_pids), 30, f"the dead driver's actors {actor_pids} to exit")

    before = {index for index, *_ in started(job.parent)}
    shutil.rmtree(job.parent / "state" / "started")

    res = resume_run(run_dir.name, workspace=ws, progress="quiet")

    assert res.status == "Completed", res.summary()
    assert_each_once(output_lines(res), file_rows(n))
    # The resumed run ran exactly the mini-batches that were not committed, each once.
    rerun = sorted(index for index, *_ in started(job.parent))
    assert len(rerun) == n // 2 - done_before, (rerun, done_before)
    assert set(range(n // 2)) - set(rerun) <= before


# --- connecting: RAY_ADDRESS, Ray Client with files shipped, refusal -----------------------------------
@pytest.mark.timeout(90)
def test_compute_ray_honours_ray_address(ray_head: RayHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    job = make_job(tmp_path / "job", files=4)

    res = _run(job, tmp_path / "ws", "ray")

    assert res.status == "Completed", res.summary()
    assert {gcs.rsplit(":", 1)[1] for _, _, _, gcs in started(job.parent)} == {str(ray_head.port)}


@pytest.mark.slow  # ~7 s; CI runs it (make test-slow)
@pytest.mark.timeout(120)
def test_ray_client_ships_the_job_folder_through_runtime_env(ray_head: RayHead, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # A ray:// address on another machine ships the job folder and parallelrun via runtime_env; force
    # that here on 127.0.0.1, where it would otherwise use the paths in place.
    monkeypatch.setenv("PARALLELRUN_RAY_UPLOAD", "1")
    job = make_job(tmp_path / "job", files=6)

    with ray_head.ray_client() as address:
        res = _run(job, tmp_path / "ws", address)

    assert res.status == "Completed", res.summary()
    assert_each_once(output_lines(res), file_rows(6))
    script = Path((job.parent / "state" / "script_file").read_text())
    assert script.name == "score.py"
    assert job.parent not in script.parents, f"the entry script ran from the job folder itself: {script}"


@pytest.mark.timeout(60)
def test_node_count_is_a_maximum_a_smaller_cluster_runs_the_job(ray_head: RayHead, tmp_path: Path) -> None:
    """Elastic clusters (docs/ray.md): node_count 3 on a one-node cluster starts on that node."""
    job = make_job(tmp_path / "job", files=4, storage_options={"file": {"shared": True}})

    res = _run(job, tmp_path / "ws", ray_head.address, "node_count=3", "process_count_per_node=1")

    assert res.status == "Completed", res.summary()
    assert_each_once(output_lines(res), file_rows(4))
    assert {agent for _, agent, _, _ in started(job.parent)} == {"node0.process000"}
    assert "starting on 1 node(s) of node_count 3" in (res.record.logs_dir / "sys" / "driver.txt").read_text()


@pytest.mark.timeout(60)
def test_cli_reports_an_unreachable_cluster_as_a_usage_error(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", files=2)
    port = 1  # nothing listens there
    out = subprocess.run([sys.executable, "-m", "parallelrun", "run", str(job), "--workspace", str(tmp_path / "ws"),
                          "--quiet", "--compute", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=50)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "cannot connect to the Ray cluster at 127.0.0.1:1" in out.stderr


@pytest.mark.slow  # ~14 s: starts and stops a Ray instance of its own; CI runs it (make test-slow)
@pytest.mark.timeout(120)
def test_compute_ray_without_an_address_starts_a_private_local_instance(tmp_path: Path, short_tmp: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Keep Ray from writing ~/.ray/auth_token (a new local instance turns token auth on by default, and
    # later `ray start` runs on this machine would then require it).
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_TMPDIR", str(short_tmp / "local"))  # its session files, not /tmp/ray
    job = make_job(tmp_path / "job", files=6, process_count_per_node=3)  # more workers than cores: still runs

    t0 = time.monotonic()
    res = _run(job, tmp_path / "ws", "ray")
    print(f"\ncompute: ray (private instance, 3 workers): {time.monotonic() - t0:.1f}s")

    assert res.status == "Completed", res.summary()
    assert_each_once(output_lines(res), file_rows(6))
    assert len({gcs for *_, gcs in started(job.parent)}) == 1
    # The instance lived in its own folder under RAY_TMPDIR, removed (with its processes) at the end.
    assert (short_tmp / "local").is_dir() and not list((short_tmp / "local").iterdir())
