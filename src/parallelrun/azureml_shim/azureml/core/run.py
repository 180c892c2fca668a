"""``azureml.core.run.Run`` inside a parallelrun worker: ``Run.get_context()`` gives the step's run.

``input_datasets`` maps each input's name to its local path. Metrics (``log``, ``log_list``, ``log_row``)
are appended as JSON lines to ``logs/user/metrics/<process>.jsonl`` in the step run's folder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class _Named:
    def __init__(self, name: str | None) -> None:
        self.name = name
        self.id = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Run:
    """The current step run (``Run.get_context()``)."""

    _context: Run | None = None

    def __init__(self) -> None:
        self.id = os.environ.get("PARALLELRUN_STEP_NAME", "offline")
        self.experiment = _Named(os.environ.get("PARALLELRUN_EXPERIMENT"))
        self.parent = _Named(os.environ.get("PARALLELRUN_PIPELINE_RUN_ID"))
        self.input_datasets: dict[str, str] = json.loads(os.environ.get("PARALLELRUN_INPUT_DATASETS") or "{}")
        self._tags: dict[str, str] = {}

    @classmethod
    def get_context(cls, allow_offline: bool = True, **_ignored: Any) -> Run:
        if cls._context is None:
            cls._context = cls()
        return cls._context

    def _metrics_file(self) -> Path:
        log_dir = os.environ.get("PARALLELRUN_LOG_DIR")
        agent = os.environ.get("PARALLELRUN_AGENT_NAME", f"process{os.getpid()}")
        if not log_dir:
            try:
                from parallelrun.entry_script import EntryScript

                log_dir = EntryScript().log_dir
            except ImportError:
                log_dir = os.getcwd()
        path = Path(log_dir) / "user" / "metrics" / f"{agent}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _write(self, kind: str, name: str, value: Any) -> None:
        with open(self._metrics_file(), "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": time.time(), "kind": kind, "name": name, "value": value}, default=str)
                    + "\n")

    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        self._write("scalar", name, value)

    def log_list(self, name: str, value: list[Any], description: str = "") -> None:
        self._write("list", name, list(value))

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        self._write("row", name, kwargs)

    def log_table(self, name: str, value: dict[str, Any], description: str = "") -> None:
        self._write("table", name, value)

    def tag(self, key: str, value: str | None = None) -> None:
        self._tags[key] = "" if value is None else str(value)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})

    def get_tags(self) -> dict[str, str]:
        return dict(self._tags)

    def complete(self) -> None:
        pass

    def flush(self) -> None:
        pass
