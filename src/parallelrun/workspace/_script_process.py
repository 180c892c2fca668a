"""A PythonScriptStep's process: started by the pipeline driver, killed with it, stopped on a cancel.

The script runs in its own session (so a cancel can signal its whole process group) with the azureml
stand-in modules on its path, its output and errors appended to one log file, and (on Linux) a parent-death
signal, so a pipeline driver killed with SIGKILL leaves no script running on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ..azureml_shim import shim_sys_path

_POLL = 0.5  # seconds between looks for a cancel while the script runs
_GRACE = 10.0  # seconds a signal is given to end the script before the next, stronger one


def _shim_pythonpath(env: dict[str, str]) -> None:
    extra = shim_sys_path()
    if extra:
        env["PYTHONPATH"] = os.pathsep.join([*extra, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])


def _die_with_driver() -> None:
    """In the script's process before exec: SIGKILL it if the driver dies (Linux), so a killed pipeline
    leaves no script running on its own."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def run_script(cmd: list[str], cwd: str, env: dict[str, str], log_path: Path,
               canceled: Callable[[], bool]) -> int | None:
    """Run ``cmd`` to its end; its exit code, or None when ``canceled()`` turned true and it was stopped
    (SIGTERM to its process group, then SIGKILL)."""
    env = dict(env)
    _shim_pythonpath(env)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_driver)
        return _wait(proc, canceled)


def _wait(proc: subprocess.Popen[bytes], canceled: Callable[[], bool]) -> int | None:
    while True:
        try:
            return proc.wait(timeout=_POLL)
        except subprocess.TimeoutExpired:
            if not canceled():
                continue
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=_GRACE)
                return None
            except subprocess.TimeoutExpired:
                continue
        return None
