"""The API against a job that is running (a real ``parallelrun run`` subprocess), ending with Cancel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dashboard_helpers import RunningJob, make_client, make_job, read_record, wait_for

from parallelrun.dashboard import create_app

CSRF = {"X-Parallelrun-CSRF": "1"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("running")
    # 2 workers, 2 items a mini-batch, 0.15 s an item: ~6 items/s, 240 items; cancelled long before the end.
    job = make_job(root, n_files=240, bad=(3,), sleep=0.15, process_count_per_node=2)
    rj = RunningJob(job, root / "ws")
    try:
        rj.wait_running(min_batches_done=3)
        yield rj
    finally:
        rj.close()


@pytest.fixture(scope="module")
def client(running: RunningJob):
    with make_client(create_app(running.ws)) as c:
        yield c


def test_live_progress_moves_while_the_job_runs(client, running: RunningJob) -> None:
    first = client.get(f"/api/runs/{running.run_id}/live").json()
    assert first["status"] == "Running"
    later = wait_for("progress to move", lambda: (lambda p: p if p["items_done"] > first["items_done"] else None)(
        client.get(f"/api/runs/{running.run_id}/live").json()), timeout=30)
    assert later["items_total"] == 240 and 0 < later["percent"] < 100
    assert later["items_per_second"] > 0 and later["eta_seconds"] and later["eta_seconds"] > 0
    # run.json still holds the counts of the start; the dashboard reads the journal.
    assert read_record(running.ws, running.run_id)["counts"]["items_succeeded"] == 0
    assert sum(p[1] for p in later["series"]["points"]) > 0


def test_workers_show_their_mini_batch_heartbeat_and_memory(client, running: RunningJob) -> None:
    def two_busy_workers():
        live = client.get(f"/api/runs/{running.run_id}/live").json()
        ws = (live["workers"] or {}).get("workers") or []
        return live if len(ws) == 2 and all(w["batch"] is not None for w in ws) else None

    live = wait_for("two busy workers", two_busy_workers, timeout=30)
    workers = live["workers"]
    assert workers["running"] is True and live["now"] - workers["updated_at"] < 10
    for w in workers["workers"]:
        assert w["name"].startswith("node0.process") and w["pid"] > 0 and w["ready"] is True
        assert isinstance(w["batch"], int) and w["attempt"] == 1 and w["queue"] >= 0
        assert w["rss"] > 10 * 2**20  # a Python worker holds some memory
        assert live["now"] - w["heartbeat"] < 10 and w["batch_started"] <= live["now"] + 1


def test_runs_list_shows_live_counts(client, running: RunningJob) -> None:
    (row,) = client.get("/api/runs", params={"status": "Running"}).json()["runs"]
    assert row["id"] == running.run_id and row["items_succeeded"] > 0 and row["items"] == 240


def test_failed_items_appear_while_running(client, running: RunningJob) -> None:
    body = wait_for("the bad item's failure", lambda: (lambda b: b if b["total"] else None)(
        client.get(f"/api/runs/{running.run_id}/failed_items").json()), timeout=30)
    assert any(i["item"].endswith("f003_bad.txt") and i["exc_type"] == "ValueError" for i in body["items"])


def test_log_follow_returns_only_new_text(client, running: RunningJob) -> None:
    url = f"/api/runs/{running.run_id}/logs/job_progress_overview.txt"
    first = client.get(url, params={"offset": 0}).json()
    # The driver appends a progress line every 5 s.
    more = wait_for("a new progress line", lambda: (lambda d: d if d["text"] else None)(
        client.get(url, params={"offset": first["next_offset"]}).json()), timeout=20, every=0.5)
    assert more["offset"] == first["next_offset"] and "items done" in more["text"]
    assert more["next_offset"] == first["next_offset"] + len(more["text"].encode())


def test_cancel_without_the_csrf_header_is_refused_and_the_job_keeps_running(client, running: RunningJob) -> None:
    r = client.post(f"/api/runs/{running.run_id}/cancel")
    assert r.status_code == 403
    r = client.post(f"/api/runs/{running.run_id}/cancel", headers={**CSRF, "Origin": "http://evil.example"})
    assert r.status_code == 403
    time.sleep(0.5)
    assert running.proc.poll() is None
    assert client.get(f"/api/runs/{running.run_id}/live").json()["status"] == "Running"


def test_cancel_stops_the_run_and_leaves_it_resumable(client, running: RunningJob) -> None:
    r = client.post(f"/api/runs/{running.run_id}/cancel", headers=CSRF)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "Canceled"
    assert running.proc.wait(30) == 130
    rec = read_record(running.ws, running.run_id)
    assert rec["status"] == "Canceled" and "resumable" in rec["reason"]
    assert rec["counts"]["batches_pending"] > 0
    live = client.get(f"/api/runs/{running.run_id}/live").json()
    assert live["status"] == "Canceled" and live["workers"]["running"] is False
    assert client.post(f"/api/runs/{running.run_id}/cancel", headers=CSRF).status_code == 409
    assert Path(running.ws / "runs" / running.run_id / "workers.json").is_file()
