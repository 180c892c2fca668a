"""What the command modules share: option types, messages, the version flag."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Workspace = Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace folder (default ./.parallelrun)")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a field: --set mini_batch_size=20")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output")]


def err(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(1, "file")`` -> ``1 file``; ``plural(3, "mini-batch", "mini-batches")`` -> ``3 mini-batches``."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def version_callback(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"parallelrun {__version__}")
        raise typer.Exit(0)
