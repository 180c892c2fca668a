"""The ``parallelrun`` command line (typer). Parses, calls the library, maps errors to exit codes.

:func:`main` is the command: before it loads the command line's modules (typer, then the engine), a plain
local ``parallelrun run JOB`` starts a worker on a CPU the driver leaves idle (``execution.prestart``).
"""

from __future__ import annotations

import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    """Run the CLI, mapping errors to exit codes (2 usage/spec, 1 job failed, 130 interrupted)."""
    from ..execution import prestart

    prestart.start_for(sys.argv[1:] if argv is None else list(argv))
    try:
        from .app import main as app_main

        return app_main(argv)
    finally:
        prestart.discard()  # workers started ahead that the run did not take (it failed before starting)


def __getattr__(name: str) -> Any:
    if name == "app":  # the typer application, loaded on first use
        from .app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
