"""The ``parallelrun`` command line (typer). Parses, calls the library, maps errors to exit codes.

:func:`main` is the command: before it loads the command line's modules (typer, then the engine), a plain
local ``parallelrun run JOB`` starts a worker on a CPU the driver leaves idle (``execution.prestart``).

:func:`console` is the installed ``parallelrun`` script (and ``python -m parallelrun``): ``main`` in a
process of its own, which lets it spare the process work that only matters to a long-lived one. Python's
cyclic garbage collector walks every object the process holds - tens of milliseconds once typer,
pydantic and the engine are loaded - at each full collection, and once more when the interpreter exits;
the command moves what it has loaded out of the collector's reach (``gc.freeze``) once the modules of a
run are in (:func:`settle`), and everything before exiting. A W1 run (10,000 mini-batches) spent ~30 ms
in a full collection and ~90 ms in the one at exit, of ~2 s. Called in-process (``main``), nothing
changes: a long-lived caller keeps its collector as it was.
"""

from __future__ import annotations

import gc
import sys
from typing import Any, NoReturn

_console = False  # main() runs as the command's own process (console), not inside a caller's


def main(argv: list[str] | None = None) -> int:
    """Run the CLI, mapping errors to exit codes (2 usage/spec, 1 job failed, 130 interrupted)."""
    from ..execution import prestart

    prestart.start_for(sys.argv[1:] if argv is None else list(argv))
    try:
        from .app import main as app_main

        return app_main(argv)
    finally:
        prestart.discard()  # workers started ahead that the run did not take (it failed before starting)


def console() -> NoReturn:
    """The ``parallelrun`` command: :func:`main`, then exit. What the process holds is frozen first, so the
    interpreter's last collection skips it; its exit is otherwise the usual one (threads joined, atexit
    handlers, streams flushed)."""
    global _console
    _console = True
    code = main()
    gc.freeze()
    sys.exit(code)


def settle() -> None:
    """A long command's modules are loaded: in the command's own process, what is held so far (modules,
    classes, the parsed spec) will live until it exits, and full collections need not walk it again."""
    if _console:
        gc.freeze()


def __getattr__(name: str) -> Any:
    if name == "app":  # the typer application, loaded on first use
        from .app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "console", "main"]
