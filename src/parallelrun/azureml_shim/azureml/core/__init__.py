"""``azureml.core`` inside a parallelrun worker: ``Model`` and ``Run``; other names say what to use."""

from __future__ import annotations

from typing import Any

from .model import Model
from .run import Run

__all__ = ["Model", "Run"]

_ELSEWHERE = {"Workspace", "Dataset", "Datastore", "Experiment", "Environment", "ComputeTarget",
              "ScriptRunConfig"}


def __getattr__(name: str) -> Any:
    if name in _ELSEWHERE:
        raise ImportError(
            f"azureml.core.{name} is not available inside a parallelrun worker: the stand-in for azureml.core "
            "provides Model (get_model_path) and Run (get_context). Build pipelines with "
            f"'from parallelrun import {name}' in your driver code, or install azureml-core to use the real SDK."
        )
    raise AttributeError(f"module 'azureml.core' has no attribute {name!r}")
