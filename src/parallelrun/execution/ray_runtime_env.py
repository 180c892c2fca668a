"""The Ray runtime_env of a job's actors: the user's ``ray.runtime_env`` merged with what parallelrun needs.

Pure functions of the job's configuration (no Ray call), used by ``RayCluster`` and unit-tested alone.
The rules, as docs/ray.md states them:

- **Paths are the job's.** A relative local path in the runtime_env (``working_dir``, a ``py_modules``
  entry, a ``pip`` requirements file or a local wheel / sdist / folder in its list, a ``conda`` YAML
  file) is relative to the job folder, like every other path of the job spec; Ray itself would take it
  relative to the driver's current folder, and pip installs from an empty folder, where it means nothing.
- **Where it goes.** Everything but ``env_vars`` is the job-level runtime_env (``ray.init``), so Ray
  uploads folders and builds a ``pip`` environment once for the job. ``env_vars`` are set per actor,
  merged: runtime_env ``env_vars`` first, then the job's ``environment_variables`` (which carry an
  Environment's variables), which win on a clash - the job spec is the more specific of the two, and a
  variable such as ``OMP_NUM_THREADS`` must be in place when the actor's process starts.
- **One interpreter.** ``pip``, ``uv``, ``conda``, ``py_executable``, ``container`` and ``image_uri``
  each choose the actors' Python; so does an Environment with packages (its virtual environment, built on
  this machine, becomes the actors' ``py_executable``). Ray would silently keep one of the two, so a job
  giving both is refused, saying which to keep.
- **A remote cluster** (Ray Client, upload on): the job folder is the ``working_dir`` and parallelrun a
  ``py_modules`` entry; an Environment's virtual environment does not exist there (refused: the packages
  go in runtime_env ``pip``), nor may the user's ``working_dir`` replace the job folder.
- **No runtime_env when there is nothing to set.** Ray gives an actor with a runtime_env of its own a
  new worker process (importing Ray there costs about a second of CPU), while an actor without one can
  take a worker Ray started ahead (``ray start`` and a private instance start one per CPU for the first
  job). parallelrun's folder on ``PYTHONPATH`` is the one variable of ours: a private instance, started
  by this process, gets it in its own environment instead (``path_set``), so that its actors carry a
  runtime_env only when the job sets variables or an interpreter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError

#: set to 1 (or 0) to force (or forbid) shipping the job folder and parallelrun through runtime_env
UPLOAD_ENV = "PARALLELRUN_RAY_UPLOAD"
#: runtime_env keys that name local folders Ray uploads; only the job-level runtime_env uploads them
UPLOADED_KEYS = ("working_dir", "py_modules", "excludes")
#: runtime_env keys that each choose the Python the actors run
INTERPRETER_KEYS = ("pip", "uv", "conda", "py_executable", "container", "image_uri")
#: endings of pip list entries that are local files (anything else is a requirement such as ``pkg==1.0``)
_LOCAL_PIP_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2")


def resolve_paths(runtime_env: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A copy of ``runtime_env`` whose relative local paths are made absolute against ``base`` (the job folder).

    URIs (``s3://``, ``gs://``, ``https://``...) and absolute paths are kept; a relative path is resolved
    only when something exists there, so a pip requirement that merely looks like a path is left alone.
    """
    env = dict(runtime_env)

    def local(p: Any, *, must_exist: bool = True) -> Any:
        if not isinstance(p, str) or not p or "://" in p or os.path.isabs(p):
            return p
        full = os.path.normpath(os.path.join(base, os.path.expanduser(p)))
        return full if (os.path.exists(full) or not must_exist) else p

    if "working_dir" in env:
        env["working_dir"] = local(env["working_dir"], must_exist=False)
    if isinstance(env.get("py_modules"), list):
        env["py_modules"] = [local(m) for m in env["py_modules"]]
    for key in ("pip", "uv"):
        env[key] = _resolve_packages(env[key], local) if key in env else None
        if env[key] is None:
            env.pop(key)
    conda = env.get("conda")
    if isinstance(conda, str) and conda.endswith((".yml", ".yaml")):
        env["conda"] = local(conda)
    return env


def _resolve_packages(value: Any, local: Any) -> Any:
    """``pip``/``uv`` as a requirements file (str), a list of requirements, or ``{"packages": ...}``."""
    if isinstance(value, str):
        return local(value)
    if isinstance(value, list):
        return [local(p) if _looks_local(p) else p for p in value]
    if isinstance(value, dict) and "packages" in value:
        return {**value, "packages": _resolve_packages(value["packages"], local)}
    return value


def _looks_local(requirement: Any) -> bool:
    return isinstance(requirement, str) and (
        requirement.startswith((".", "~")) or requirement.endswith(_LOCAL_PIP_SUFFIXES)
        or os.sep in requirement.split(";", 1)[0] and "@" not in requirement
    )


def check_interpreter(runtime_env: Mapping[str, Any], python: str | None) -> None:
    """Refuse an Environment's virtual environment together with a runtime_env that picks the interpreter."""
    chosen = [k for k in INTERPRETER_KEYS if runtime_env.get(k)]
    if python and chosen:
        raise UsageError(
            f"this job runs in an Environment's virtual environment ({python}) and its Ray runtime_env sets "
            f"{', '.join(chosen)}: both choose the Python the Ray actors run, and Ray would use only one. Keep "
            "one: list the packages in runtime_env pip (Ray installs them on every node) and drop the "
            "Environment's packages (or set PARALLELRUN_ENVIRONMENT=current), or drop "
            f"{', '.join(chosen)} from runtime_env."
        )


def job_runtime_env(user: Mapping[str, Any], *, python: str | None, upload: bool, compute: str,
                    source_directory: str, working_dir: str, excluded: list[str]) -> tuple[dict[str, Any], str | None]:
    """(the job-level runtime_env for ``ray.init``, the folder shipped as its working_dir or None).

    ``user`` is the resolved runtime_env; ``excluded`` are folders to leave out of an upload (the output,
    the run's folder).
    """
    check_interpreter(user, python)
    env = {k: v for k, v in user.items() if k != "env_vars"}  # per actor, merged with the job's variables
    if not upload:
        return env, None
    if python:
        raise UsageError(
            f"this job's Environment runs in the virtual environment {python}, which exists only on this "
            f"machine, but compute: {compute} is a remote Ray cluster. List the Environment's pip packages in "
            "the job's Ray runtime_env instead (ray: {runtime_env: {pip: [...]}}, or RayCompute(..., "
            "runtime_env={'pip': [...]})) and run without them (PARALLELRUN_ENVIRONMENT=current), install them on the "
            "cluster's nodes, or use a Ray address on this machine."
        )
    if "working_dir" in env:
        raise UsageError(
            f"runtime_env working_dir {env['working_dir']!r} and the job folder parallelrun uploads to "
            f"the remote cluster {compute} would both be the workers' working_dir. Drop working_dir from "
            f"runtime_env (the job folder is shipped; put modules in py_modules), or set {UPLOAD_ENV}=0."
        )
    import parallelrun

    source, job_dir = Path(source_directory), Path(working_dir)
    root = job_dir if _inside(source, job_dir) else source
    excludes = [".git", "__pycache__", ".parallelrun", ".venv", *env.pop("excludes", [])]
    for p in excluded:
        if _inside(Path(p), root):
            excludes.append("/" + str(Path(p).resolve().relative_to(root.resolve())))
    return {**env, "working_dir": str(root), "excludes": excludes,
            "py_modules": [*env.get("py_modules", []), str(Path(parallelrun.__file__).parent)]}, str(root)


def actor_runtime_env(user: Mapping[str, Any], *, python: str | None, upload: bool, joined_session: bool,
                      environment_variables: Mapping[str, str], path_set: bool = False) -> dict[str, Any]:
    """Each actor's runtime_env: its variables, an Environment's interpreter, and, when the caller's
    own Ray session is used (no job-level runtime_env of ours), what Ray can apply per actor; ``{}``
    when there is nothing to set (``path_set``: the cluster's processes have parallelrun's folder on
    their path already, see :func:`env_vars`)."""
    check_interpreter(user, python)
    env: dict[str, Any] = {}
    variables = env_vars(user, environment_variables, upload=upload, path_set=path_set)
    if variables:
        env["env_vars"] = variables
    if joined_session:
        uploads = [k for k in UPLOADED_KEYS if k in user]
        if uploads:
            raise UsageError(
                f"runtime_env {', '.join(uploads)} needs Ray to upload local folders when it connects, but Ray "
                "was already initialised by this process. Call ray.shutdown() first, or pass them to your "
                "own ray.init(runtime_env=...)."
            )
        env.update({k: v for k, v in user.items() if k != "env_vars"})
    if python and not upload:
        # An Environment's venv (built on this machine, on the driver's interpreter, so it sees the
        # same Ray): the actor's worker process runs that interpreter, as local workers do.
        env["py_executable"] = python
    return env


def env_vars(user: Mapping[str, Any], environment_variables: Mapping[str, str], *, upload: bool,
             path_set: bool = False) -> dict[str, str]:
    """runtime_env env_vars, then the job's environment_variables (which win), from process start
    (OMP_NUM_THREADS must precede imports); and this parallelrun on the path so that actors on a
    cluster on this machine run the driver's version of it, unless ``path_set`` (the cluster's
    processes were started with it: :func:`source_path`) and the job sets no PYTHONPATH of its own."""
    given = user.get("env_vars") or {}
    env = {**{str(k): str(v) for k, v in given.items()}, **{str(k): str(v) for k, v in environment_variables.items()}}
    if not upload and (not path_set or "PYTHONPATH" in env):
        env["PYTHONPATH"] = os.pathsep.join([source_path(), env.get("PYTHONPATH", "${PYTHONPATH}")])
    return env


def source_path() -> str:
    """The folder this parallelrun is imported from (what goes on the actors' PYTHONPATH)."""
    import parallelrun

    return str(Path(parallelrun.__file__).resolve().parent.parent)


def with_source_path(pythonpath: str | None) -> str:
    """``pythonpath`` with :func:`source_path` first: the PYTHONPATH of a private instance's processes,
    whose workers then import this parallelrun without a runtime_env."""
    return os.pathsep.join(p for p in (source_path(), pythonpath) if p)


def _inside(p: Path, root: Path) -> bool:
    try:
        p.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False
