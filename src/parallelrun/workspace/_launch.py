"""Starting the pipeline driver: the detached background process that runs a pipeline run's steps.

Shared by ``Pipeline`` (submit) and ``PipelineRun`` (resume, cancel), so neither has to import the other.
The driver itself is ``pipeline_driver.py``; this module only launches it and names the files both sides
agree on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

from ..errors import UsageError
from ..runs import RunRecord, RunStore

# Created in a pipeline run's folder to ask its driver to stop (read by pipeline_driver.py).
CANCEL_MARKER = "cancel_requested"
_EXPERIMENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
_DRIVERS: list[subprocess.Popen[bytes]] = []  # keeps Popen objects alive: no ResourceWarning, reaped on exit


def check_experiment_name(name: object) -> str:
    if not isinstance(name, str) or not _EXPERIMENT_NAME_RE.match(name):
        raise UsageError(f"experiment name {name!r} is invalid: use letters, digits, '_' and '-', starting "
                         "with a letter or digit (e.g. 'batch-scoring')")
    return name


def start_driver(workspace: Any, rec: RunRecord, options: dict[str, Any], resume: bool) -> None:
    """Start the detached pipeline driver; credentials go through its stdin, never to disk."""
    store = RunStore(workspace.path)
    log = open(rec.logs_dir / "driver_stdout.txt", "ab")  # noqa: SIM115 - handed to the child
    cmd = [sys.executable, "-m", "parallelrun.workspace.pipeline_driver", str(workspace.path), rec.id]
    if resume:
        cmd.append("--resume")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd=os.getcwd())
    finally:
        log.close()
    _DRIVERS.append(proc)
    # The driver reads its stdin to the end before it touches the record, so this save cannot race it.
    fresh = store.get(rec.id)
    fresh.driver_pid = proc.pid
    if resume:
        fresh.status, fresh.reason, fresh.ended = "NotStarted", None, None
    store.save(fresh)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"storage_options": options}).encode())
    proc.stdin.close()
