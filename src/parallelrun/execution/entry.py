"""Loading the user's entry script and calling it, with the user's own traceback on failure.

The driver checks a script statically (``check_entry_script``: it parses, defines ``run``) without
executing it, so a syntax error or a missing ``run`` is a usage error before any worker starts. Workers
load it for real (``load_entry_script``) and call ``init``/``run``/``shutdown`` through ``EntryPoints``.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import EntryScriptError, UserCodeError

_OUR_DIR = str(Path(__file__).resolve().parent.parent)


def check_entry_script(path: Path) -> None:
    """Parse the script without running it; raise EntryScriptError on a syntax error or a missing run()."""
    if not path.is_file():
        raise EntryScriptError(
            f"entry script {path} does not exist. entry_script is relative to source_directory "
            "(or to the job file's folder when source_directory is not set)."
        )
    source = path.read_text()
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as e:
        detail = "".join(traceback.format_exception_only(type(e), e))
        raise EntryScriptError(f"entry script {path} has a syntax error:\n{detail}") from None
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    if "run" not in names:
        raise EntryScriptError(
            f"entry script {path} defines no run() function. Add:\n\n"
            "    def init():\n        ...  # load the model once per worker\n\n"
            "    def run(mini_batch):\n        return [...]  # one element per succeeded item\n"
        )


def user_traceback(exc: BaseException) -> str:
    """Format an exception keeping only the user's frames (not parallelrun's own)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OUR_DIR):
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines)


def to_user_error(exc: BaseException) -> UserCodeError:
    return UserCodeError(type(exc).__name__, str(exc), user_traceback(exc))


@dataclass
class EntryPoints:
    module: ModuleType
    init: Callable[[], Any] | None
    run: Callable[..., Any]
    shutdown: Callable[[], Any] | None
    run_takes_context: bool


def load_entry_script(path: Path) -> EntryPoints:
    """Import the script as module ``entry_script`` (its own traceback on failure)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise EntryScriptError(f"cannot load entry script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)  # user code: its exceptions propagate with its frames
    run = getattr(module, "run", None)
    if not callable(run):
        raise EntryScriptError(f"entry script {path} defines no callable run(mini_batch)")
    takes_context = False
    try:
        params = [
            p for p in inspect.signature(run).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        takes_context = len(params) >= 2 or any(
            p.kind == p.VAR_POSITIONAL for p in inspect.signature(run).parameters.values()
        )
    except (TypeError, ValueError):
        pass
    init = getattr(module, "init", None)
    shutdown = getattr(module, "shutdown", None)
    return EntryPoints(
        module,
        init if callable(init) else None,
        run,
        shutdown if callable(shutdown) else None,
        takes_context,
    )


@dataclass(frozen=True)
class MiniBatchContext:
    """The optional second argument of ``run(mini_batch, mini_batch_context)``."""

    minibatch_index: int
    partition_key_value: dict[str, Any] | None = None
    dataset: str | None = None
