"""Hints for Azure ML scripts that fail on today's libraries: what changed, and what to do.

Azure ML SDK v1 scripts were written against pandas 1.x/2.x. pandas 3 changed behaviour they rely on;
the commonest break is Azure's own ``iris_score.py`` pattern, assigning a 2-D ``(n, 1)`` array to a
column (``result['variety'] = pred.reshape((n, 1))``), which pandas 3 refuses for string data
(``ArrowInvalid: only handle 1-dimensional arrays``). Pinning ``pandas<3`` in the step's Environment
makes such a script run unchanged.

Where a user's exception is formatted (``execution/entry.py::to_user_error``), append
``migration_hint(exc)`` to the traceback text.
"""

from __future__ import annotations

import os
from importlib import metadata

_PANDAS_DIR = os.sep + "pandas" + os.sep

PANDAS3_HINT = (
    "\nHint: this error was raised inside pandas {version}. Scripts written for Azure ML SDK v1 often rely "
    "on pandas 1.x/2.x behaviour that pandas 3 changed: e.g. Azure's iris_score.py assigns a 2-D array to a "
    "column (result['variety'] = pred.reshape((n, 1))), which pandas 3 refuses. Either pin pandas<3 in the "
    "step's Environment:\n"
    "    env.python.conda_dependencies = CondaDependencies.create(pip_packages=['pandas<3', ...])\n"
    "or update the line (here: assign pred.ravel()). See docs/migrating-from-azureml.md, \"pandas 3\".\n"
)


def _pandas_major() -> tuple[int, str] | None:
    try:
        version = metadata.version("pandas")
    except metadata.PackageNotFoundError:
        return None
    head = version.split(".", 1)[0]
    return (int(head), version) if head.isdigit() else None


def raised_inside_pandas(exc: BaseException) -> bool:
    """Whether a frame of ``exc``'s traceback (or of the exceptions it chains) is pandas' own code."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            if _PANDAS_DIR in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return False


def migration_hint(exc: BaseException) -> str:
    """A hint to append to a user script's traceback, or "" when none applies."""
    if not raised_inside_pandas(exc):
        return ""
    pandas = _pandas_major()
    if pandas is None or pandas[0] < 3:
        return ""
    return PANDAS3_HINT.format(version=pandas[1])
