"""What runs inside a Ray actor: one worker process running one ``WorkerRuntime`` (``ray_executor.py`` is the
driver's side).

The actor's ``run`` calls (several mini-batches each) run one at a time, in order, on its call thread, which
also runs ``start`` (set-up and ``init()``) and ``stop``; ``take`` (the outcomes ended so far) and ``offer``
(batches to fetch ahead) run on threads of their own, so they answer while ``run()`` works or hangs. The actor
notes each batch it starts (``running_note.py``), which the driver reads when the actor dies to tell the
batch it was running from the ones that had ended.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import Any

from ..data.batches import MiniBatch
from ..errors import UserCodeError
from .messages import Outcome, error_outcome
from .running_note import RunningNote, running_marker
from .worker import WorkerConfig

#: once ``take`` has an outcome, seconds it waits for more (what a commit may wait; negligible next to
#: run_invocation_timeout)
LINGER = 0.02


class RayWorker:
    """The actor body: one Ray worker process running one ``WorkerRuntime``.

    The constructor takes nothing: the ``WorkerConfig`` (which may carry storage credentials) arrives
    with the ``start`` call, so it is never stored in the GCS as part of the actor's creation spec.
    """

    def __init__(self) -> None:
        self.rt: Any = None
        self.marker = RunningNote(None)
        self.outcomes: list[Outcome] = []  # ended, not taken yet
        self.ended = threading.Condition()

    def start(self, cfg: WorkerConfig, shipped_root: str | None) -> tuple[int, str, UserCodeError | None]:
        import ray

        from .worker import WorkerRuntime

        node_id = ray.get_runtime_context().get_node_id()
        # Made afresh: an earlier driver's actor of the same name (resume) may have left one.
        self.marker = RunningNote(running_marker(cfg.log_dir, cfg.agent_name))
        try:
            self.rt = WorkerRuntime(_relocate(cfg, shipped_root))
            self.rt.setup()
        except BaseException as e:  # noqa: BLE001 - reported as this worker's start-up failure
            from .entry import to_user_error

            return os.getpid(), node_id, to_user_error(e)
        return os.getpid(), node_id, self.rt.init()

    def run(self, items: list[tuple[MiniBatch, int]]) -> int:
        """Run several batches, in order; each outcome waits for ``take`` as soon as its batch ends."""
        for batch, attempt in items:
            self.marker.note(batch.index, attempt)
            try:
                out: Outcome = self.rt.process(batch, attempt)
            except Exception as e:  # noqa: BLE001 - our own code failed: this batch's error, not the call's
                from .entry import to_user_error

                out = error_outcome(self.rt.cfg.agent_name, batch.index, attempt, to_user_error(e))
            with self.ended:
                self.outcomes.append(out)
                self.ended.notify()
        return len(items)

    def take(self, wait: float) -> list[Outcome]:
        """The outcomes of the batches that ended since the last ``take``, in order (on the outcomes thread,
        while ``run`` works); waits up to ``wait`` seconds for the first, then ``LINGER`` for more."""
        with self.ended:
            if not self.outcomes:
                self.ended.wait(wait)
        if self.outcomes:
            # Quick batches: let a few more end, so that replies (each costs the run thread the GIL for a
            # while) carry several outcomes. Run() hanging meanwhile keeps nothing back for longer.
            time.sleep(LINGER)
        with self.ended:
            out, self.outcomes = self.outcomes, []
        return out

    def offer(self, items: list[tuple[MiniBatch, int]]) -> None:
        """Batches a coming ``run`` call holds (on the inbox thread): start fetching their remote inputs."""
        if self.rt is not None:
            for batch, attempt in items:
                self.rt.offer(batch, attempt)

    def ping(self) -> int:
        return os.getpid()

    def stop(self) -> bool:
        if self.rt is not None:
            self.rt.shutdown()
        self.marker.close()
        return True


def _relocate(cfg: WorkerConfig, shipped_root: str | None) -> WorkerConfig:
    """On a remote node the job folder arrives through runtime_env ``working_dir`` (the actor's cwd):
    rewrite the paths that pointed into it on the driver's machine."""
    if not shipped_root:
        return cfg
    here = os.getcwd()

    def move(p: str) -> str:
        rel = os.path.relpath(p, shipped_root)
        return p if rel == ".." or rel.startswith(".." + os.sep) else os.path.normpath(os.path.join(here, rel))

    working_dir = move(cfg.working_dir)
    return replace(
        cfg, entry_script=move(cfg.entry_script), source_directory=move(cfg.source_directory),
        working_dir=working_dir if os.path.isdir(working_dir) else here,
        extra_sys_path=[move(p) for p in cfg.extra_sys_path],
    )
