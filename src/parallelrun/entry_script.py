"""``EntryScript``: what an entry script can ask about the process it runs in (Azure's helper of that name).

    from parallelrun import EntryScript
    logger = EntryScript().logger

The worker fills the process-wide context before it loads the script; outside a worker (a plain
``python my_script.py``) the logger is a standard logger and the folders are the current directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class _Context:
    agent_name: str = "local"
    output_dir: str = field(default_factory=os.getcwd)
    log_dir: str = field(default_factory=os.getcwd)
    working_dir: str = field(default_factory=os.getcwd)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("parallelrun.user"))


_context = _Context()


def _configure(agent_name: str, output_dir: str, log_dir: str, log_file: Path | None, level: str) -> None:
    """Called by the worker before the entry script is loaded."""
    logger = logging.getLogger(f"parallelrun.user.{agent_name}")
    logger.setLevel(level)
    logger.propagate = False
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        h = logging.FileHandler(log_file, encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(h)
    else:
        h2 = logging.StreamHandler()
        h2.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(h2)
    _context.agent_name = agent_name
    _context.output_dir = output_dir
    _context.log_dir = log_dir
    _context.working_dir = os.getcwd()
    _context.logger = logger


class EntryScript:
    """Facts about the worker process the entry script runs in."""

    @property
    def logger(self) -> logging.Logger:
        """A logger writing to this process's file under ``logs/user/entry_script_log/``."""
        return _context.logger

    @property
    def output_dir(self) -> str:
        """The job's output folder (write side files here)."""
        return _context.output_dir

    @property
    def log_dir(self) -> str:
        """The run's ``logs/`` folder."""
        return _context.log_dir

    @property
    def working_dir(self) -> str:
        return _context.working_dir

    @property
    def agent_name(self) -> str:
        """This worker's name, e.g. ``node0.process001``."""
        return _context.agent_name
