"""Security: no reading outside a run's logs, tokens beyond loopback, no cross-site cancel, host checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import Workspace, free_port, make_client, raw_get

from parallelrun.dashboard import create_app
from parallelrun.dashboard.data import Rejected, read_log, run_folder, safe_log_path
from parallelrun.dashboard.security import MIN_TOKEN_LENGTH, Policy, is_loopback, served_names
from parallelrun.errors import UsageError

SECRET = "TOP-SECRET-CONTENT"
CSRF = {"X-Parallelrun-CSRF": "1"}


@pytest.fixture(scope="module")
def planted(workspace: Workspace) -> Workspace:
    """Secrets next to the run folder, in the workspace, and outside it; symlinks in logs/ pointing at them."""
    ws = workspace.path
    run = ws / "runs" / workspace.finished
    (ws / "secret.txt").write_text(SECRET)
    (ws / "runs" / "secret.txt").write_text(SECRET)
    (run / "secret.txt").write_text(SECRET)  # in the run folder but not in its logs/
    outside = ws.parent / "outside-secret.txt"
    outside.write_text(SECRET)
    logs = run / "logs"
    for name, target in (("link-out.txt", outside), ("link-ws.txt", ws / "secret.txt"),
                         ("link-run.txt", run / "secret.txt")):
        if not (logs / name).is_symlink():
            os.symlink(target, logs / name)
    if not (logs / "linkdir").is_symlink():
        os.symlink(ws.parent, logs / "linkdir")
    (logs / "inside.txt").write_text("fine\n")
    return workspace


TRAVERSALS = [
    "../run.json",
    "../secret.txt",
    "../../secret.txt",
    "../../../secret.txt",
    "../../../outside-secret.txt",
    "sys/../../secret.txt",
    "./../secret.txt",
    "/etc/passwd",
    "//etc/passwd",
    "link-out.txt",
    "link-ws.txt",
    "link-run.txt",
    "linkdir/outside-secret.txt",
    "sys/\x00driver.txt",
    "",
    ".",
    "sys/..",
]


@pytest.mark.parametrize("rel", TRAVERSALS)
def test_log_paths_cannot_leave_the_logs_folder(planted: Workspace, rel: str) -> None:
    with pytest.raises(Rejected):
        read_log(planted.path, planted.finished, rel)


def test_a_log_path_inside_is_read(planted: Workspace) -> None:
    assert read_log(planted.path, planted.finished, "inside.txt", offset=0)["text"] == "fine\n"
    assert safe_log_path(planted.path / "runs" / planted.finished, "sys/../inside.txt").name == "inside.txt"


@pytest.mark.parametrize("raw", [
    "..%2F..%2Fsecret.txt",
    "..%2f..%2f..%2foutside-secret.txt",
    "%2e%2e/%2e%2e/secret.txt",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "%252e%252e%252fsecret.txt",  # double-encoded: a literal '%2e%2e%2f...' name, which does not exist
    "..%5c..%5csecret.txt",
    "%2Fetc%2Fpasswd",
    "link-out.txt",
    "linkdir/outside-secret.txt",
    "sys%2F%00driver.txt",
])
def test_encoded_traversal_over_http_is_refused(planted: Workspace, raw: str) -> None:
    with make_client(create_app(planted.path)) as client:
        r = client.get(f"/api/runs/{planted.finished}/logs/{raw}")
    assert r.status_code in (400, 403, 404), (raw, r.status_code)
    assert SECRET not in r.text


def test_log_listing_skips_links_that_leave_the_folder(planted: Workspace) -> None:
    with make_client(create_app(planted.path)) as client:
        paths = {f["path"] for f in client.get(f"/api/runs/{planted.finished}/logs").json()}
    assert "inside.txt" in paths
    assert not {"link-out.txt", "link-ws.txt", "link-run.txt"} & paths
    assert not any(p.startswith("linkdir") for p in paths)


@pytest.mark.parametrize("run_id", ["..", ".", "...", ".hidden", "..%2F..", "%2e%2e", "..%2Fsecret.txt", "%00"])
def test_run_ids_cannot_walk_the_workspace(planted: Workspace, run_id: str) -> None:
    app = create_app(planted.path)
    for suffix in ("", "/logs", "/logs/secret.txt", "/logs/run.json", "/live", "/failed_items"):
        status, body = raw_get(app, f"/api/runs/{run_id}{suffix}")
        assert status in (403, 404), (run_id, suffix, status)
        assert SECRET not in body and "entry_script" not in body


@pytest.mark.parametrize("raw", ["../run.json", "../secret.txt", "../../secret.txt", "../../../secret.txt",
                                 "sys/../../secret.txt", "./../../../outside-secret.txt", "%2e%2e/secret.txt"])
def test_dot_segments_sent_as_is_are_refused(planted: Workspace, raw: str) -> None:
    status, body = raw_get(create_app(planted.path), f"/api/runs/{planted.finished}/logs/{raw}")
    assert status == 403, (raw, status)
    assert SECRET not in body and "entry_script" not in body


def test_a_symlinked_run_folder_outside_the_workspace_is_refused(planted: Workspace, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "logs").mkdir(parents=True)
    (elsewhere / "run.json").write_text("{}")
    link = planted.path / "runs" / "evil_run"
    os.symlink(elsewhere, link)
    try:
        with pytest.raises(Rejected):
            run_folder(planted.path, "evil_run")
    finally:
        link.unlink()


# --- tokens ------------------------------------------------------------------------------------------------
GOOD_TOKEN = "s3cret-token-value"


def test_loopback_binds_need_no_token_and_others_get_one() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"):
        assert is_loopback(host), host
        assert Policy.for_bind(host, 8265, None).token is None
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        assert not is_loopback(host), host
        policy = Policy.for_bind(host, 8265, None)
        assert policy.token and len(policy.token) >= 32
    assert Policy.for_bind("0.0.0.0", 8265, None).token != Policy.for_bind("0.0.0.0", 8265, None).token
    assert Policy.for_bind("0.0.0.0", 8265, GOOD_TOKEN).token == GOOD_TOKEN


@pytest.mark.parametrize("token, says", [
    ("", "empty"), ("   ", "empty"), ("short", "too short"), ("x" * (MIN_TOKEN_LENGTH - 1), "too short"),
    ("a-long-enough-token; Path=/", "cookie cannot carry"), ("a long enough token value", "cookie cannot carry"),
    ("a-long-enough-tökenvalue", "cookie cannot carry"),
])
@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_empty_short_or_malformed_tokens_are_usage_errors(token: str, says: str, host: str) -> None:
    with pytest.raises(UsageError, match=says) as info:
        Policy.for_bind(host, 8265, token)
    assert info.value.exit_code == 2 and "--token" in str(info.value)


def test_cli_refuses_an_empty_token_before_binding(workspace: Workspace) -> None:
    """`--token "$TOKEN"` with TOKEN unset: exit 2 and a message, and nothing listens (the port stays free)."""
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "parallelrun", "dashboard", "--workspace", str(workspace.path), "--host", "0.0.0.0",
         "--port", str(port), "--token", ""], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--token is empty" in proc.stderr and "Traceback" not in proc.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free: the server never bound it


def _wildcard_app(workspace: Workspace, token: str | None = None, allow: tuple[str, ...] = ()) -> Any:
    return create_app(workspace.path, policy=Policy.for_bind("0.0.0.0", 8265, token, allow))


def test_wildcard_bind_needs_the_token_from_every_name_it_serves(workspace: Workspace) -> None:
    """--host 0.0.0.0: this machine's names are served (token required); other names are refused outright."""
    app = _wildcard_app(workspace)
    token = app.policy.token
    bearer = {"Authorization": f"Bearer {token}"}
    for name in ("127.0.0.1", "localhost", socket.gethostname().lower()):
        with make_client(app, base_url=f"http://{name}:8265") as client:
            assert client.get("/api/runs").status_code == 401, name
            assert client.get("/api/runs", params={"token": ""}).status_code == 401, name
            assert client.get("/api/runs", headers={"Authorization": "Bearer "}).status_code == 401, name
            assert client.get("/api/runs", headers=bearer).status_code == 200, name
    for name in ("evil.example", "127.0.0.2", "0.0.0.0", "localhost.evil.example"):
        with make_client(app, base_url=f"http://{name}:8265") as client:
            r = client.get("/api/runs", headers=bearer)
            assert r.status_code == 400, name
            assert "not a name this dashboard serves" in r.json()["detail"]


def test_allow_host_adds_a_served_name(workspace: Workspace) -> None:
    app = _wildcard_app(workspace, GOOD_TOKEN, allow=("dash.example.org",))
    with make_client(app, base_url="http://DASH.example.org:8265") as client:
        assert client.get("/api/runs", headers={"Authorization": f"Bearer {GOOD_TOKEN}"}).status_code == 200
        assert client.get("/api/runs").status_code == 401


def test_served_names_are_exact() -> None:
    assert served_names("127.0.0.1") == {"127.0.0.1", "localhost"}
    assert served_names("[::1]") == {"::1", "localhost"}
    assert served_names("127.0.0.2") == {"127.0.0.2"}
    assert served_names("192.168.1.5") == {"192.168.1.5"}
    assert served_names("Example.COM") == {"example.com"}
    wild = served_names("0.0.0.0")
    assert {"127.0.0.1", "localhost", socket.gethostname().lower()} <= wild
    assert "0.0.0.0" not in wild and "evil.example" not in wild


def test_serve_beyond_loopback_prints_a_token_and_enforces_it(monkeypatch, workspace: Workspace) -> None:
    import uvicorn

    from parallelrun.dashboard import app as app_module

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    lines: list[str] = []
    app_module.serve(workspace.path, host="0.0.0.0", port=9999, echo=lines.append)
    assert served["host"] == "0.0.0.0" and served["port"] == 9999
    token = served["app"].policy.token
    assert token and any(f"?token={token}" in line for line in lines)
    with make_client(served["app"], base_url="http://10.255.254.253:9999") as client:
        assert client.get("/api/runs").status_code == 400  # not one of this machine's names
    with make_client(served["app"], base_url="http://127.0.0.1:9999") as client:
        assert client.get("/api/runs").status_code == 401
        assert client.get("/").status_code == 401
        assert client.get("/static/app.js").status_code == 401
        assert client.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.fixture
def token_client(workspace: Workspace):
    policy = Policy.for_bind("0.0.0.0", 8265, GOOD_TOKEN)
    with make_client(create_app(workspace.path, policy=policy)) as client:
        yield client


def test_token_is_checked_on_every_request(token_client, workspace: Workspace) -> None:
    for path in ("/", f"/runs/{workspace.finished}", "/static/app.js", "/api/runs", "/api/openapi.json",
                 f"/api/runs/{workspace.finished}/logs/sys/driver.txt"):
        assert token_client.get(path).status_code == 401, path
        assert token_client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
        assert token_client.get(path, params={"token": "wrong"}).status_code == 401, path
        ok = token_client.get(path, headers={"Authorization": "Bearer s3cret-token-value"})
        assert ok.status_code == 200, path


def test_query_token_sets_a_strict_httponly_cookie_and_leaves_the_url(token_client) -> None:
    r = token_client.get("/", params={"token": "s3cret-token-value", "keep": "1"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?keep=1"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("parallelrun_token_8265=s3cret-token-value")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    # The client keeps the cookie: the page and the API now work without the token in the URL.
    assert token_client.get("/").status_code == 200
    assert token_client.get("/api/runs").status_code == 200


def test_cancel_needs_the_token_too(token_client, workspace: Workspace) -> None:
    r = token_client.post(f"/api/runs/{workspace.finished}/cancel", headers=CSRF)
    assert r.status_code == 401
    r = token_client.post(f"/api/runs/{workspace.finished}/cancel",
                          headers={**CSRF, "Authorization": "Bearer s3cret-token-value"})
    assert r.status_code == 409  # authorised, and the run is simply not running


# --- cross-site requests and hosts ----------------------------------------------------------------------
@pytest.mark.parametrize("headers, expected", [
    ({}, 403),  # no custom header: what a cross-site <form> POST looks like
    ({"Origin": "http://evil.example"}, 403),
    ({**CSRF, "Origin": "http://evil.example"}, 403),
    ({**CSRF, "Origin": "null"}, 403),
    ({**CSRF, "Sec-Fetch-Site": "cross-site"}, 403),
    ({**CSRF, "Sec-Fetch-Site": "same-site"}, 403),
    ({**CSRF, "Origin": "http://127.0.0.1:8265", "Sec-Fetch-Site": "same-origin"}, 409),
    (CSRF, 409),
])
def test_cancel_is_protected_against_cross_site_requests(client, workspace: Workspace, headers, expected) -> None:
    r = client.post(f"/api/runs/{workspace.finished}/cancel", headers=headers)
    assert r.status_code == expected, r.text


def test_cancel_is_post_only(client, workspace: Workspace) -> None:
    assert client.get(f"/api/runs/{workspace.finished}/cancel").status_code in (404, 405)


def test_loopback_mode_refuses_foreign_host_headers(workspace: Workspace) -> None:
    """DNS rebinding: a page on evil.example re-resolved to 127.0.0.1 still sends Host: evil.example."""
    app = create_app(workspace.path)
    with make_client(app, base_url="http://evil.example:8265") as client:
        assert client.get("/api/runs").status_code == 400
        assert client.get("/").status_code == 400
    for host in ("127.0.0.1:8265", "localhost:8265"):
        with make_client(app, base_url=f"http://{host}") as client:
            assert client.get("/api/runs").status_code == 200, host
    # Only the names of the address bound: other loopback names a client may send are refused.
    for host in ("[::1]:8265", "127.0.0.2:8265", "127.1:8265", "0.0.0.0:8265"):
        with make_client(app, base_url=f"http://{host}") as client:
            assert client.get("/api/runs").status_code == 400, host


def test_responses_forbid_framing_sniffing_and_inline_script(client) -> None:
    for path in ("/", "/api/runs", "/static/app.js"):
        h = client.get(path).headers
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "script-src 'self'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in h
