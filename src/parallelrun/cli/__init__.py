"""The ``parallelrun`` command line (typer). Parses, calls the library, maps errors to exit codes."""

from .app import app, main

__all__ = ["app", "main"]
