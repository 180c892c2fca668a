"""The JSON API against finished, failed and pipeline runs made by the real engine."""

from __future__ import annotations

import json

from dashboard_helpers import Workspace


def test_runs_are_listed_newest_first_with_their_counts(client, workspace: Workspace) -> None:
    body = client.get("/api/runs").json()
    ids = [r["id"] for r in body["runs"]]
    assert ids == [workspace.step, workspace.pipeline, workspace.failed, workspace.finished]
    created = [r["created"] for r in body["runs"]]
    assert created == sorted(created, reverse=True)
    finished = next(r for r in body["runs"] if r["id"] == workspace.finished)
    assert (finished["status"], finished["items"], finished["items_succeeded"], finished["items_failed"]) == (
        "Completed", 10, 8, 2)
    assert finished["items_per_second"] > 0 and finished["duration_seconds"] > 0
    assert body["statuses"] == ["Completed", "Failed"]
    assert body["experiments"] == ["nightly"]


def test_runs_filter_by_status_and_experiment(client, workspace: Workspace) -> None:
    failed = client.get("/api/runs", params={"status": "Failed"}).json()["runs"]
    assert [r["id"] for r in failed] == [workspace.failed]
    assert failed[0]["reason"] and "threshold" in failed[0]["reason"]
    nightly = client.get("/api/runs", params={"experiment": "nightly"}).json()["runs"]
    assert {r["id"] for r in nightly} == {workspace.pipeline, workspace.step}
    top = client.get("/api/runs", params={"parent": ""}).json()["runs"]
    assert workspace.step not in {r["id"] for r in top}
    assert client.get("/api/runs", params={"status": "Running"}).json()["runs"] == []


def test_a_run_has_its_config_progress_and_log_files(client, workspace: Workspace) -> None:
    d = client.get(f"/api/runs/{workspace.finished}").json()
    assert d["status"] == "Completed"
    assert d["config"]["spec"]["mini_batch_size"] == 2 and d["config"]["spec"]["entry_script"] == "score.py"
    p = d["progress"]
    assert (p["items_done"], p["items_total"], p["percent"], p["eta_seconds"]) == (10, 10, 100.0, 0.0)
    # The items/s series adds up to the items finished (each bucket is items/s over `bucket` seconds).
    assert round(sum(pt[1] for pt in p["series"]["points"]) * p["series"]["bucket"]) == 10
    assert round(sum(pt[2] for pt in p["series"]["points"]) * p["series"]["bucket"]) == 2
    paths = {f["path"] for f in d["logs_files"]}
    assert {"job_progress_overview.txt", "job_result.txt", "sys/driver.txt",
            "sys/job_report/processed_mini-batches.csv", "user/error/failed_items.jsonl"} <= paths
    assert any(x.startswith("user/stdout/node0/") for x in paths)
    assert p["workers"]["running"] is False and p["workers"]["workers"] == []


def test_a_pipeline_run_lists_its_steps(client, workspace: Workspace) -> None:
    d = client.get(f"/api/runs/{workspace.pipeline}").json()
    assert [s["id"] for s in d["steps"]] == [workspace.step]
    assert d["steps"][0]["status"] == "Completed" and d["steps"][0]["items_succeeded"] == 4
    assert client.get(f"/api/runs/{workspace.pipeline}/steps").json()[0]["id"] == workspace.step
    assert client.get(f"/api/runs/{workspace.finished}/steps").json() == []


def test_failed_items_carry_the_users_traceback(client, workspace: Workspace) -> None:
    body = client.get(f"/api/runs/{workspace.failed}/failed_items").json()
    assert body["total"] >= 1
    bad = next(i for i in body["items"] if i["item"].endswith("f001_bad.txt"))
    assert bad["exc_type"] == "ValueError" and "cannot score f001_bad.txt" in bad["message"]
    assert 'raise ValueError(f"cannot score {name}")' in bad["traceback"]
    assert "score.py" in bad["traceback"]
    page = client.get(f"/api/runs/{workspace.failed}/failed_items", params={"offset": 1, "limit": 1}).json()
    assert page["total"] == body["total"] and len(page["items"]) == min(1, body["total"] - 1)


def test_batches_page_and_filter(client, workspace: Workspace) -> None:
    all_ = client.get(f"/api/runs/{workspace.finished}/batches").json()
    assert all_["total"] == 5 and [b["idx"] for b in all_["batches"]] == [0, 1, 2, 3, 4]
    failed = client.get(f"/api/runs/{workspace.finished}/batches", params={"state": "failed"}).json()
    assert [b["idx"] for b in failed["batches"]] == [2] and "cannot score" in failed["batches"][0]["error"]
    page = client.get(f"/api/runs/{workspace.finished}/batches", params={"offset": 3, "limit": 1}).json()
    assert [b["idx"] for b in page["batches"]] == [3] and page["total"] == 5
    assert client.get(f"/api/runs/{workspace.finished}/batches", params={"state": "nonsense"}).status_code == 422


def test_log_tail_and_follow_by_offset(client, workspace: Workspace) -> None:
    base = f"/api/runs/{workspace.failed}/logs"
    whole = client.get(f"{base}/job_result.txt", params={"offset": 0}).json()
    assert whole["offset"] == 0 and whole["next_offset"] == whole["size"]
    assert f"run {workspace.failed}: Failed" in whole["text"]
    tail = client.get(f"{base}/job_result.txt", params={"tail": 40}).json()
    assert whole["text"].endswith(tail["text"]) and tail["offset"] > 0 and len(tail["text"]) <= 40
    assert not tail["text"] or tail["offset"] == whole["size"] - len(tail["text"].encode())
    end = client.get(f"{base}/job_result.txt", params={"offset": whole["next_offset"]}).json()
    assert end["text"] == "" and end["next_offset"] == whole["size"]
    failed_items = client.get(f"{base}/user/error/failed_items.jsonl", params={"offset": 0}).json()
    first = json.loads(failed_items["text"].splitlines()[0])
    assert first["exception"] == "ValueError"
    assert client.get(f"{base}/no/such.txt").status_code == 404


def test_unknown_run_is_404(client) -> None:
    assert client.get("/api/runs/nope_20200101_000000_abcdef").status_code == 404
    assert client.get("/api/runs/nope_20200101_000000_abcdef/live").status_code == 404
    assert client.post("/api/runs/nope_20200101_000000_abcdef/cancel",
                       headers={"X-Parallelrun-CSRF": "1"}).status_code == 404


def test_cancel_of_a_finished_run_is_a_conflict(client, workspace: Workspace) -> None:
    r = client.post(f"/api/runs/{workspace.finished}/cancel", headers={"X-Parallelrun-CSRF": "1"})
    assert r.status_code == 409 and "not running" in r.json()["detail"]


def test_pages_and_static_files_are_served(client, workspace: Workspace) -> None:
    for path in ("/", f"/runs/{workspace.finished}"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script src="/static/app.js"' in r.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "X-Parallelrun-CSRF" in js.text
    assert client.get("/static/app.css").status_code == 200


def test_openapi_document_describes_the_api(client) -> None:
    doc = client.get("/api/openapi.json").json()
    paths = doc["paths"]
    for p in ("/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/live", "/api/runs/{run_id}/batches",
              "/api/runs/{run_id}/failed_items", "/api/runs/{run_id}/logs", "/api/runs/{run_id}/logs/{path}",
              "/api/runs/{run_id}/cancel"):
        assert p in paths, p
    assert "post" in paths["/api/runs/{run_id}/cancel"] and "get" not in paths["/api/runs/{run_id}/cancel"]
    # The interactive doc pages would load scripts from a CDN: not served.
    assert client.get("/docs").status_code == 404


def test_info(client, workspace: Workspace) -> None:
    assert client.get("/api/info").json()["workspace"] == str(workspace.path.resolve())


def test_the_documented_api_is_the_served_api(client) -> None:
    """docs/dashboard.md's endpoint table and the OpenAPI document list the same endpoints."""
    import re

    from dashboard_helpers import REPO

    doc = (REPO / "docs" / "dashboard.md").read_text()
    documented = set(re.findall(r"^\| `(GET|POST) (/api/[^`]*)` \|", doc, flags=re.M))
    served = {(m.upper(), p) for p, ops in client.get("/api/openapi.json").json()["paths"].items() for m in ops}
    served.add(("GET", "/api/openapi.json"))
    assert documented | {("GET", "/api/openapi.json")} == served


def test_a_pipelines_progress_is_its_steps_progress(client, workspace: Workspace) -> None:
    live = client.get(f"/api/runs/{workspace.pipeline}/live").json()
    assert (live["items_total"], live["items_done"], live["percent"]) == (4, 4, 100.0)
    assert [s["id"] for s in live["steps"]] == [workspace.step]


def test_answers_are_reused_for_ten_times_their_cost() -> None:
    import time

    from parallelrun.dashboard.app import CostCache

    cache, calls = CostCache(factor=10, floor=0.0), []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.05)
        return len(calls)

    assert cache.get(("live", "r1"), slow) == 1
    assert cache.get(("live", "r1"), slow) == 1  # within 10 x 0.05 s: reused
    assert cache.get(("live", "r2"), slow) == 2  # another run: computed
    cache.forget("r1")
    assert cache.get(("live", "r1"), slow) == 3
    time.sleep(0.6)
    assert cache.get(("live", "r1"), slow) == 4  # expired
