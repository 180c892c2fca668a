"""Building an environment's virtual environment: with uv when it is there, else with ``venv`` + pip.

uv is a dependency of parallelrun (the ``uv`` package on PyPI ships the binary), so a plain
``pip install parallelrun`` has it and ``uv.find_uv_bin()`` finds it. Where it cannot be found (a
platform without a uv wheel, a distribution that strips it), the standard library's ``venv`` and the
venv's own pip do the same job, more slowly; nobody has to install a tool by hand.

``$PARALLELRUN_INSTALLER`` chooses: ``uv`` (fail if uv is missing), ``pip`` (always venv + pip), unset or
``auto`` (uv if found, else pip). ``$PARALLELRUN_UV`` names a uv binary to use.

Invariants: a venv is built once per spec hash under ``<workspace>/envs/<hash>/``; builds are serialised
by an ``flock`` on ``<hash>.lock``; the folder is marked ready (``.parallelrun-ready``, written last and
renamed into place) only after every step succeeded, and a failed or half-done build is removed, so it
is never reused.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import site
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import parallelrun

from ..errors import ParallelRunError
from ..runs import flock_within

READY_FILE = ".parallelrun-ready"
BUILD_TIMEOUT = float(os.environ.get("PARALLELRUN_ENV_BUILD_TIMEOUT", "1800"))
INSTALLER_VAR = "PARALLELRUN_INSTALLER"
_INSTALLERS = ("auto", "uv", "pip")


class EnvironmentBuildError(ParallelRunError):
    """Building an environment's virtual environment failed; the message holds the installer's output."""

    exit_code = 2


@dataclass(frozen=True)
class Installer:
    """How to create a venv and install requirements into it: uv's commands, or venv's and pip's."""

    name: str  # "uv" or "pip"
    uv: str | None = None  # the uv binary, for name == "uv"

    def create(self, env_dir: Path) -> list[str]:
        if self.uv:
            return [self.uv, "venv", "--quiet", "--python", sys.executable, str(env_dir)]
        return [sys.executable, "-m", "venv", str(env_dir)]

    def install(self, python: Path, requirements: Path) -> list[str]:
        if self.uv:
            return [self.uv, "pip", "install", "--python", str(python), "-r", str(requirements)]
        return [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                "-r", str(requirements)]


def find_uv() -> str | None:
    """The uv binary: ``$PARALLELRUN_UV``, the installed ``uv`` package, next to this interpreter, or on PATH."""
    candidates = [os.environ.get("PARALLELRUN_UV")]
    try:
        from uv import find_uv_bin  # the uv package: a dependency, but a distribution may lack its binary

        candidates.append(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    candidates += [str(Path(sys.executable).parent / "uv"), shutil.which("uv")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    return None


def choose_installer() -> Installer:
    """uv when available (or required by ``$PARALLELRUN_INSTALLER=uv``), else venv + pip."""
    wanted = (os.environ.get(INSTALLER_VAR) or "auto").strip().lower()
    if wanted not in _INSTALLERS:
        raise EnvironmentBuildError(f"{INSTALLER_VAR}={wanted!r} is not one of {', '.join(_INSTALLERS)}; "
                                    f"unset it to use uv when available and venv + pip otherwise")
    if wanted == "pip":
        return Installer("pip")
    uv = find_uv()
    if uv is not None:
        return Installer("uv", uv)
    if wanted == "uv":
        raise EnvironmentBuildError(f"{INSTALLER_VAR}=uv, but uv was not found (it comes with parallelrun's "
                                    "'uv' dependency: pip install uv). Unset it to build with venv + pip.")
    return Installer("pip")


def venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def build(envs: Path, digest: str, packages: list[str], options: list[str]) -> Path:
    """The interpreter of the venv ``envs/<digest>``, built first if it is not ready."""
    env_dir = envs / digest
    python = venv_python(env_dir)  # not resolved: the symlink's location is what makes it the venv
    if (env_dir / READY_FILE).is_file():
        return python
    envs.mkdir(parents=True, exist_ok=True)
    fd = os.open(envs / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not flock_within(fd, BUILD_TIMEOUT, poll=0.5):
            raise EnvironmentBuildError(f"waited {BUILD_TIMEOUT:.0f} s for another build holding "
                                        f"{envs / f'{digest}.lock'}; if no build is running, delete that file")
        if (env_dir / READY_FILE).is_file():  # another process built it while we waited
            return python
        if env_dir.exists():
            shutil.rmtree(env_dir)  # a build that crashed half-way
        try:
            installer = choose_installer()
            _run(installer.create(env_dir), "creating the venv", installer.name)
            _link_parallelrun(env_dir)
            req = env_dir / "parallelrun-requirements.txt"
            req.write_text("\n".join([*options, *packages]) + "\n")
            _run(installer.install(python, req), "installing the packages", installer.name)
            ready = env_dir / f"{READY_FILE}.tmp"
            ready.write_text(json.dumps({"packages": packages, "options": options, "installer": installer.name,
                                         "built": time.time()}) + "\n")
            os.replace(ready, env_dir / READY_FILE)
        except BaseException:
            shutil.rmtree(env_dir, ignore_errors=True)
            raise
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return python


def _run(cmd: list[str], what: str, tool: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                              env={**os.environ, "VIRTUAL_ENV": "", "PIP_REQUIRE_VIRTUALENV": ""})
    except subprocess.TimeoutExpired:
        raise EnvironmentBuildError(f"{what} took more than {BUILD_TIMEOUT:.0f} s: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-4000:]
        raise EnvironmentBuildError(f"{what} failed ({tool} exited {proc.returncode}): {' '.join(cmd)}\n{output}")


def _link_parallelrun(env_dir: Path) -> None:
    """Make parallelrun and its dependencies importable in the venv.

    The venv's own site-packages come first on ``sys.path``; the ``.pth`` file appends parallelrun's source
    folder and this interpreter's site-packages after them, so the environment's pinned packages win and
    anything it does not pin (pandas, pyarrow, ... that parallelrun needs) still resolves.
    """
    v = sys.version_info
    site_packages = env_dir / "lib" / f"python{v[0]}.{v[1]}" / "site-packages"
    paths = [str(Path(parallelrun.__file__).resolve().parent.parent)]
    paths += [p for p in site.getsitepackages() if Path(p).is_dir()]
    (site_packages / "_parallelrun_base.pth").write_text("\n".join(dict.fromkeys(paths)) + "\n")
