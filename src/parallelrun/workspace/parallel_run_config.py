"""ParallelRunConfig, as in Azure ML SDK v1: how a ParallelRunStep runs its entry script.

It is a job spec without its inputs (the step supplies them): validated on construction with the
engine's own validation, every problem reported at once in one :class:`~parallelrun.errors.JobSpecError`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ..config import mini_batch_size_problem, validate_spec
from ..errors import JobSpecError
from . import _refs

# ParallelRunConfig fields that map one to one onto the engine's job spec.
_SPEC_FIELDS = ("mini_batch_size", "error_threshold", "allowed_failed_count", "allowed_failed_percent",
                "output_action", "append_row_file_name", "process_count_per_node", "node_count",
                "run_invocation_timeout", "run_max_try", "logging_level", "environment_variables")


class ParallelRunConfig:
    """How a ParallelRunStep runs its entry script; Azure's ParallelRunConfig, validated on construction.

    ``source_directory`` is resolved against the current folder now, as Azure snapshots it at submit.
    ``environment`` is an :class:`Environment` (None: this interpreter); ``compute_target`` a
    LocalCompute, a RayCompute, or the name of a registered compute target (None: local).
    """

    def __init__(self, entry_script: str, source_directory: str | os.PathLike[str] | None = None,
                 mini_batch_size: int | str | None = None, error_threshold: int = -1,
                 allowed_failed_count: int | None = None, allowed_failed_percent: float | None = None,
                 output_action: str = "append_row", append_row_file_name: str | None = None,
                 environment: Any = None, compute_target: Any = None, node_count: int = 1,
                 process_count_per_node: int | None = None, logging_level: str = "INFO",
                 run_invocation_timeout: float = 60, run_max_try: int = 3,
                 environment_variables: dict[str, str] | None = None, description: str | None = None,
                 partition_keys: list[str] | None = None) -> None:
        self.entry_script = entry_script
        self.source_directory = str(Path(source_directory).resolve()) if source_directory is not None else None
        self._base_dir = self.source_directory or os.getcwd()
        self.mini_batch_size = mini_batch_size
        self.error_threshold = error_threshold
        self.allowed_failed_count = -1 if allowed_failed_count is None else allowed_failed_count
        self.allowed_failed_percent = 100 if allowed_failed_percent is None else allowed_failed_percent
        self.output_action = output_action
        self.append_row_file_name = append_row_file_name or "parallel_run_step.txt"
        self.environment = environment
        self.compute_target = compute_target
        self.node_count = node_count
        self.process_count_per_node = process_count_per_node or (os.cpu_count() or 1)
        self.logging_level = logging_level.upper() if isinstance(logging_level, str) else logging_level
        self.run_invocation_timeout = run_invocation_timeout
        self.run_max_try = run_max_try
        self.environment_variables = dict(environment_variables or {})
        self.description = description
        self._node_count_warned = False
        problems = []
        if partition_keys:
            problems.append("partition_keys: partitioning by keys is not supported; split the input into one "
                            "folder per key and run one step per folder, or group the rows inside run().")
        if (p := mini_batch_size_problem(mini_batch_size, None)) is not None:
            problems.append(p)
        try:
            validate_spec(self._spec_fields(mini_batch=False) | {
                "name": "config-check", "inputs": [{"type": "file", "path": "."}]})
        except JobSpecError as e:
            problems.extend(e.problems)
        if problems:
            raise JobSpecError(problems, "ParallelRunConfig")

    def _spec_fields(self, mini_batch: bool = True, compute: dict[str, Any] | None = None) -> dict[str, Any]:
        """The engine's job-spec fields. ``compute``: the resolved compute fields, ``_refs.compute_fields`` (known at submit; before
        that, only when the target is an object rather than a registered name)."""
        d = {f: getattr(self, f) for f in _SPEC_FIELDS}
        d["entry_script"] = self.entry_script
        d["source_directory"] = self._base_dir
        if not mini_batch or d["mini_batch_size"] is None:
            d.pop("mini_batch_size")
        elif isinstance(d["mini_batch_size"], str) and d["mini_batch_size"].strip().isdigit():
            d["mini_batch_size"] = int(d["mini_batch_size"])
        if compute is None and not (isinstance(self.compute_target, str) or self.compute_target is None):
            compute = _refs.compute_fields(self.compute_target, None)
        if compute is not None:
            d.update(compute)
        if (d.get("compute") or "local") == "local" and isinstance(self.node_count, int) and self.node_count > 1:
            # Azure code sizes its AmlCompute cluster with node_count; one machine has one node.
            if not self._node_count_warned:
                self._node_count_warned = True
                warnings.warn(f"ParallelRunConfig: node_count={self.node_count} has no meaning on local compute "
                              "(one machine); running on this machine with process_count_per_node="
                              f"{self.process_count_per_node} workers. Use a RayCompute target to spread "
                              "workers over several nodes.", UserWarning, stacklevel=3)
            d["node_count"] = 1
        return d

    def __repr__(self) -> str:
        return (f"ParallelRunConfig(entry_script={self.entry_script!r}, source_directory="
                f"{self.source_directory!r}, mini_batch_size={self.mini_batch_size!r})")
