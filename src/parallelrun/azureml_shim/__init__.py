"""Stand-ins for the Azure ML modules that entry scripts import, so Azure scripts run unmodified:

    from azureml.core import Model, Run            # azureml/core/__init__.py
    from azureml.core.model import Model           # azureml/core/model.py
    from azureml.core.run import Run               # azureml/core/run.py
    from azureml_user.parallel_run import EntryScript

The folder holding ``azureml/`` and ``azureml_user/`` is put first on ``sys.path`` of worker processes
(and on ``PYTHONPATH`` of PythonScriptStep scripts) only, and only when the real ``azureml.core`` is not
importable: the driver and the user's own interpreter never see it, and an installed Azure SDK wins.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent


def azureml_installed() -> bool:
    """Whether the real ``azureml.core`` can be imported here."""
    try:
        return importlib.util.find_spec("azureml.core") is not None
    except (ImportError, ValueError):
        return False


def shim_sys_path() -> list[str]:
    """``[<the shim folder>]`` when ``azureml.core`` is not installed, else ``[]``."""
    return [] if azureml_installed() else [str(SHIM_DIR)]
