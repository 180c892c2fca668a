"""Helpers for engine tests: write a small job (data files, entry script, job.yml) into a temp folder."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


class JobFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ws = root / "ws"

    @property
    def job(self) -> Path:
        return self.root / "job.yml"

    @property
    def output(self) -> Path:
        return self.root / "out" / "parallel_run_step.txt"

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines() if self.output.exists() else []

    def cli(self, *args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "parallelrun", *args], cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, **kw)

    def run(self, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.cli("run", "job.yml", "--workspace", str(self.ws), "--quiet", *extra, timeout=timeout)

    def run_dirs(self) -> list[Path]:
        return sorted((self.ws / "runs").iterdir())

    def record(self) -> dict[str, Any]:
        (d,) = self.run_dirs()
        return json.loads((d / "run.json").read_text())

    def failed_items(self) -> list[dict[str, Any]]:
        (d,) = self.run_dirs()
        p = d / "logs" / "user" / "error" / "failed_items.jsonl"
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def make_job(root: Path, script: str, *, n_files: int = 12, **spec: Any) -> JobFolder:
    """Files data/f000.txt.. holding their number; ``script`` is the entry script's body."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (root / "data" / f"f{i:03d}.txt").write_text(f"{i}\n")
    (root / "scripts").mkdir(exist_ok=True)
    (root / "scripts" / "entry.py").write_text(textwrap.dedent(script))
    doc = {
        "name": "test-job",
        "entry_script": "entry.py",
        "source_directory": "scripts",
        "inputs": [{"type": "file", "path": "data"}],
        "output": "out",
        "mini_batch_size": 3,
        "process_count_per_node": 2,
        "run_max_try": 2,
        "run_invocation_timeout": 20,
    }
    doc.update(spec)
    (root / "job.yml").write_text(yaml.safe_dump(doc))
    return JobFolder(root)


# For entry scripts (needs ``import os``): True the first time any worker gets here (O_EXCL makes it
# race-free): a fault that happens once, then lets the retry pass.
FIRST_TIME = """
def _first_time(tag):
    try:
        os.close(os.open(f"marker-{tag}", os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False
"""

ECHO = """
import os
def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
"""


def expected_names(n: int) -> list[str]:
    return [f"f{i:03d}.txt" for i in range(n)]


os.environ.setdefault("PYTHONFAULTHANDLER", "1")


def journal_count(ws: Path, what: str = "batches WHERE state='succeeded'") -> int:
    """``SELECT COUNT(*) FROM <what>`` in the (first) run's journal, read-only: what a test watching a
    running driver waits for before it kills it. 0 while there is no journal yet."""
    runs = ws / "runs"
    for d in sorted(runs.iterdir()) if runs.is_dir() else []:
        db = d / "journal.sqlite"
        if not db.exists():
            continue
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                (n,) = con.execute(f"SELECT COUNT(*) FROM {what}").fetchone()
            finally:
                con.close()
            return int(n)
        except sqlite3.Error:
            return 0
    return 0
