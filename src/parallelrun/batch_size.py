"""mini_batch_size: the one parser. Everything that reads a mini_batch_size (the job spec, ParallelRunConfig,
the planner, the Azure ML YAML) asks this module, directly or through ``parallelrun.config``, which
re-exports its names.

File input takes a count of files per mini-batch; tabular input a size in bytes with an optional 1024-based
unit (Azure's "1MB", "512KB", "1024"; v2 YAML's "10kb"); either takes ``auto`` (measured on probes).
"""

from __future__ import annotations

import re

# A valid example, quoted in error messages (and in the job spec's EXAMPLES).
EXAMPLE = "mini_batch_size: 10 (file input), mini_batch_size: 1MB (tabular input), or auto"

# mini_batch_size for tabular input: a number of bytes with an optional 1024-based unit (Azure's "1MB",
# "512KB", "1024"; v2 YAML's "10kb"). Used by memory_per_process too.
SIZE_RE = re.compile(r"^(\d+)([kKmMgG]?)[bB]?$", re.ASCII)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def is_auto(value: object) -> bool:
    """``mini_batch_size: auto``: the driver measures run() on probes and picks the size."""
    return isinstance(value, str) and value.strip().lower() == "auto"


def parse_size(value: str | int) -> int:
    """A mini-batch size such as ``"1MB"``, ``"512KB"``, ``"10kb"``, ``"2G"`` or ``512`` in bytes (1024-based).
    Raises ValueError for anything else, and for zero."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        text = repr(value)
    m = SIZE_RE.match(text)
    size = int(m.group(1)) * _UNITS[m.group(2).lower()] if m else 0
    if size <= 0:
        raise ValueError(f"invalid mini-batch size {value!r}: use a size such as '1MB' or '512KB'")
    return size


def parse_count(value: str | int) -> int:
    """A file count (``10`` or ``"10"``); raises ValueError unless it is a positive whole number."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ValueError(f"invalid file count {value!r}: use a positive whole number such as 10")
    count = int(str(value).strip())
    if count < 1:
        raise ValueError(f"invalid file count {value!r}: use a positive whole number such as 10")
    return count


def mini_batch_size_problem(value: object, input_type: str | None) -> str | None:
    """Why ``value`` is not a valid mini_batch_size for ``input_type`` (``file``, ``tabular``, or None when
    the input is not known yet: either kind is accepted), or None when it is valid (None and ``auto`` are)."""
    if value is None or is_auto(value):
        return None
    if not isinstance(value, (int, str)) or isinstance(value, bool):
        return f"mini_batch_size: {value!r} must be a number of files, a size, or auto. {EXAMPLE}"
    parsers = {"file": parse_count, "tabular": parse_size}
    for kind in ([input_type] if input_type in parsers else ["file", "tabular"]):
        try:
            parsers[kind](value)
            return None
        except ValueError:
            continue
    if input_type == "file":
        return (f"mini_batch_size: {value!r} is not a file count; file input takes a positive number of files "
                f"per mini-batch. Example: mini_batch_size: 10")
    if input_type == "tabular":
        return (f"mini_batch_size: {value!r} is not a size; tabular input takes a size matching "
                f"^\\d+([kKmMgG][bB])?$. Example: mini_batch_size: 1MB")
    return (f"mini_batch_size: {value!r} is neither a file count (FileDataset input) nor a size "
            f"(TabularDataset input). Example: {EXAMPLE}")
