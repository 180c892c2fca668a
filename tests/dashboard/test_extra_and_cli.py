"""The dashboard is an optional extra: the core never imports it; a missing extra names the pip command.
And ``parallelrun dashboard`` serves for real (uvicorn, 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

from dashboard_helpers import REPO, Workspace, free_port, interrupt, wait_for


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_the_core_does_not_import_the_web_stack() -> None:
    r = _python(
        "import sys\n"
        "import parallelrun, parallelrun.runner, parallelrun.live, parallelrun.notebook, parallelrun.dashboard\n"
        "import parallelrun.cli.app\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette', 'IPython'))\n"
        "print(bad)\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_missing_extra_names_the_pip_command() -> None:
    r = _python(
        "import sys\n"
        "sys.modules['fastapi'] = None  # what an environment without the extra looks like to import\n"
        "from parallelrun.errors import MissingExtraError\n"
        "from parallelrun.dashboard import create_app\n"
        "try:\n"
        "    create_app('.')\n"
        "except MissingExtraError as e:\n"
        "    print(e)\n"
    )
    assert r.returncode == 0, r.stderr
    assert "the dashboard needs the 'fastapi' package" in r.stdout
    assert "pip install 'parallelrun[dashboard]'" in r.stdout


def test_the_cli_reports_a_missing_extra_with_exit_code_2(tmp_path) -> None:
    r = _python(
        "import sys\n"
        "sys.modules['uvicorn'] = None\n"
        "from parallelrun.cli import main\n"
        f"sys.exit(main(['dashboard', '--workspace', {str(tmp_path)!r}]))\n"
    )
    assert r.returncode == 2
    assert "pip install 'parallelrun[dashboard]'" in r.stderr


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_parallelrun_dashboard_serves_with_a_token(workspace: Workspace) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelrun", "dashboard", "--workspace", str(workspace.path), "--port", str(port),
         "--token", "cli-token-123456789"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            return _get(f"{base}/api/info")[0] == 401
        except OSError:
            return False

    try:
        wait_for("the dashboard to listen", up, timeout=60)
        status, body = _get(f"{base}/api/runs", {"Authorization": "Bearer cli-token-123456789"})
        assert status == 200 and workspace.finished in {r["id"] for r in json.loads(body)["runs"]}
        assert _get(f"{base}/")[0] == 401
        assert _get(f"{base}/", {"Authorization": "Bearer cli-token-123456789"})[0] == 200
    finally:
        interrupt(proc)
    out = proc.stderr.read() if proc.stderr else ""
    assert f"open: http://127.0.0.1:{port}/?token=cli-token-123456789" in out
    assert "cli-token-123456789" not in out.split("Ctrl-C stops it", 1)[-1]  # no access log repeating the token
