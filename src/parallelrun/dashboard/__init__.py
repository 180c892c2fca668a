"""The web dashboard (optional extra ``parallelrun[dashboard]``): ``parallelrun dashboard`` serves it.

Importing this package imports neither FastAPI nor uvicorn; ``create_app`` and ``serve`` do, and raise
:class:`~parallelrun.errors.MissingExtraError` (naming the pip command) when the extra is not installed.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import MissingExtraError

DEFAULT_PORT = 8265

__all__ = ["DEFAULT_PORT", "create_app", "serve"]


def _app_module() -> Any:
    for package in ("fastapi", "uvicorn"):
        try:
            __import__(package)
        except ImportError as e:
            raise MissingExtraError(package, "dashboard", "the dashboard") from e
    from . import app

    return app


def create_app(workspace: str | os.PathLike[str] | None = None, **options: Any) -> Any:
    """The dashboard's ASGI app for ``workspace`` (see :func:`parallelrun.dashboard.app.create_app`)."""
    return _app_module().create_app(workspace, **options)


def serve(workspace: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          token: str | None = None, allow_hosts: tuple[str, ...] = ()) -> None:
    """Serve the dashboard until interrupted (see :func:`parallelrun.dashboard.app.serve`)."""
    _app_module().serve(workspace, host=host, port=port, token=token, allow_hosts=allow_hosts)
