"""Environments: definitions, versions, the docker warning, and virtual environments built with uv."""

from __future__ import annotations

import json
import subprocess
import threading
import warnings
from pathlib import Path

import pytest

from parallelrun import UsageError, run_job
from parallelrun.config import JobSpec
from parallelrun.workspace import CondaDependencies, Environment, EnvironmentBuildError, Workspace
from parallelrun.workspace._venv import INSTALLER_VAR, choose_installer, find_uv

# A tiny pure-Python package that the project's own venv does not have, so importing it proves the venv.
PACKAGE = "inflection"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / "ws")


def test_docker_settings_warn_exactly_once() -> None:
    env = Environment("scoring")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.docker.enabled = True
        env.docker.base_image = "mcr.microsoft.com/azureml/openmpi3.1.2-ubuntu18.04"
        env.docker.shm_size = "2g"
    assert len(caught) == 1
    assert caught[0].category is UserWarning
    assert "the local executor does not use containers" in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the user's line
    assert env.docker.base_image.startswith("mcr.") and env.docker.enabled is True


def test_definitions_and_versions(ws: Workspace, tmp_path: Path) -> None:
    env = Environment("scoring")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["numpy>=1.24", "azureml-defaults"],
                                                             conda_packages=["scikit-learn"])
    env.environment_variables = {"OMP_NUM_THREADS": "1"}
    assert env.packages() == ["numpy>=1.24", "scikit-learn"]  # azureml-* is provided by the shim
    assert env.register(ws).version == 1
    assert env.register(ws).version == 1  # unchanged definition: same version
    env.python.conda_dependencies.add_pip_package("pillow")
    assert env.register(ws).version == 2
    back = Environment.get(ws, "scoring", version=1)
    assert back.python.conda_dependencies.pip_packages == ["numpy>=1.24", "azureml-defaults"]
    assert back.environment_variables == {"OMP_NUM_THREADS": "1"}
    assert Environment.get(ws, "scoring").python.conda_dependencies.pip_packages[-1] == "pillow"
    assert list(ws.environments) == ["scoring"]
    assert back.fingerprint() != Environment.get(ws, "scoring").fingerprint()
    with pytest.raises(UsageError, match=r"no environment named 'scorin'.*'scoring'.*Did you mean"):
        Environment.get(ws, "scorin")

    (tmp_path / "base.txt").write_text("six==1.16.0\n")
    (tmp_path / "requirements.txt").write_text(
        "# pinned\n--extra-index-url https://example.invalid/simple\n-r base.txt\nrequests>=2  # http\n\n")
    req = Environment.from_pip_requirements("req", tmp_path / "requirements.txt")
    deps = req.python.conda_dependencies
    assert deps.pip_packages == ["six==1.16.0", "requests>=2"]
    assert deps.pip_options == ["--extra-index-url https://example.invalid/simple"]
    (tmp_path / "env.yml").write_text("name: x\ndependencies:\n  - python=3.11\n  - pip\n  - numpy\n"
                                      "  - pip:\n    - onnxruntime\n")
    conda = Environment.from_conda_specification("conda", tmp_path / "env.yml")
    assert conda.packages() == ["onnxruntime", "numpy"]


def test_no_packages_means_the_current_interpreter(ws: Workspace) -> None:
    assert Environment("plain").python_executable(ws) is None
    assert not (ws.path / "envs").exists()


def test_venv_is_built_once_and_reused(ws: Workspace, tmp_path: Path) -> None:
    env = Environment("inflect")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=[PACKAGE])
    results: list[str | None] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(env.python_executable(ws))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]  # two builds race for the lock
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    assert len(results) == 2 and results[0] == results[1]
    python = Path(results[0] or "")
    env_dir = ws.path / "envs" / env.spec_hash()
    assert python == env_dir / "bin" / "python"
    assert (env_dir / ".parallelrun-ready").is_file()
    probe = subprocess.run([str(python), "-c", f"import {PACKAGE}, parallelrun, pandas, sys; "
                            f"print({PACKAGE}.__file__); print(sys.prefix)"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    where, prefix = probe.stdout.split()
    assert where.startswith(str(env_dir)) and prefix == str(env_dir)
    stamp = (env_dir / ".parallelrun-ready").stat().st_mtime_ns
    again = Environment("other-name")  # same packages: same venv, not rebuilt
    again.python.conda_dependencies = CondaDependencies.create(pip_packages=[PACKAGE])
    assert again.python_executable(ws) == str(python)
    assert (env_dir / ".parallelrun-ready").stat().st_mtime_ns == stamp


def test_failed_build_reports_uv_and_leaves_nothing_ready(ws: Workspace) -> None:
    env = Environment("broken")
    # Refused by uv's requirement parser before any network access.
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["not a valid requirement !!"])
    with pytest.raises(EnvironmentBuildError, match=r"installing the packages failed \(uv exited \d+\)") as e:
        env.python_executable(ws)
    assert "not a valid requirement" in str(e.value)
    env_dir = ws.path / "envs" / env.spec_hash()
    assert not env_dir.exists()


def test_workers_import_the_environments_packages(ws: Workspace, tmp_path: Path) -> None:
    env = Environment("inflect")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=[PACKAGE])
    python = env.python_executable(ws)
    job = tmp_path / "job"
    (job / "data").mkdir(parents=True)
    (job / "data" / "a.txt").write_text("a")
    (job / "score.py").write_text(f"import {PACKAGE}\ndef run(batch):\n    return [{PACKAGE}.__file__ for _ in batch]\n")
    spec = JobSpec(name="venv-job", entry_script="score.py", inputs=[{"type": "file", "path": "data"}],
                   process_count_per_node=1, output=str(tmp_path / "out"), run_max_try=1)
    result = run_job(spec, job_dir=job, workspace=ws.path, progress="quiet", record_fields={"python": python})
    assert result.ok, result.summary()
    assert Path(result.output_file or "").read_text().startswith(str(ws.path / "envs"))


# --- which installer builds the venv ------------------------------------------------------------------

def _ready_record(ws: Workspace, env: Environment) -> dict[str, object]:
    return json.loads((ws.path / "envs" / env.spec_hash() / ".parallelrun-ready").read_text())


def test_uv_comes_from_the_installed_uv_package(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The normal path: uv is a dependency, found through ``uv.find_uv_bin()`` with nothing on PATH."""
    import uv

    monkeypatch.delenv("PARALLELRUN_UV", raising=False)
    monkeypatch.delenv(INSTALLER_VAR, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_uv() == uv.find_uv_bin()
    env = Environment("inflect")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=[PACKAGE])
    python = env.python_executable(ws)
    assert _ready_record(ws, env)["installer"] == "uv"
    probe = subprocess.run([str(python), "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and probe.stdout.startswith(str(ws.path / "envs")), probe.stderr


@pytest.mark.slow  # ~8 s: a virtual environment built with venv and pip
def test_venv_and_pip_build_it_when_uv_is_not_used(ws: Workspace, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback, forced: the standard library's venv and the venv's own pip, no uv involved."""
    monkeypatch.setenv(INSTALLER_VAR, "pip")
    monkeypatch.setenv("PARALLELRUN_UV", "/nonexistent/uv")
    env = Environment("inflect-pip")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=[PACKAGE])
    python = env.python_executable(ws)
    assert _ready_record(ws, env)["installer"] == "pip"
    env_dir = ws.path / "envs" / env.spec_hash()
    assert (env_dir / "pyvenv.cfg").read_text().count("uv =") == 0  # made by venv, not by uv
    probe = subprocess.run([str(python), "-c", f"import {PACKAGE}, parallelrun, pandas; print({PACKAGE}.__file__)"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith(str(env_dir))
    # And a job's workers run in it.
    job = tmp_path / "job"
    (job / "data").mkdir(parents=True)
    (job / "data" / "a.txt").write_text("a")
    (job / "score.py").write_text(f"import {PACKAGE}\ndef run(batch):\n    return [{PACKAGE}.__file__ for _ in batch]\n")
    spec = JobSpec(name="pip-venv-job", entry_script="score.py", inputs=[{"type": "file", "path": "data"}],
                   process_count_per_node=1, output=str(tmp_path / "out"), run_max_try=1)
    result = run_job(spec, job_dir=job, workspace=ws.path, progress="quiet", record_fields={"python": python})
    assert result.ok, result.summary()
    assert Path(result.output_file or "").read_text().startswith(str(env_dir))


@pytest.mark.slow  # ~16 s: pip resolves before it fails; the uv failure test runs in `make test`
def test_pip_fallback_failure_names_pip_and_leaves_nothing(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INSTALLER_VAR, "pip")
    env = Environment("broken-pip")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["not a valid requirement !!"])
    with pytest.raises(EnvironmentBuildError, match=r"installing the packages failed \(pip exited \d+\)") as e:
        env.python_executable(ws)
    assert "not a valid requirement" in str(e.value)
    assert not (ws.path / "envs" / env.spec_hash()).exists()


def test_unknown_installer_is_refused(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INSTALLER_VAR, "typo")
    with pytest.raises(EnvironmentBuildError, match=r"PARALLELRUN_INSTALLER='typo' is not one of auto, uv, pip"):
        choose_installer()


def test_current_environment_skips_the_build(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLELRUN_ENVIRONMENT", "current")
    env = Environment("old-pins")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["tensorflow==1.13.1"])
    with pytest.warns(UserWarning, match=r"packages \(tensorflow==1.13.1\) are not installed"):
        assert env.python_executable(ws) is None
    assert not (ws.path / "envs").exists()


def test_current_environment_changes_the_reuse_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    # A step run with its packages ignored must not be reused for one run in the built venv, nor back.
    env = Environment("pins")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["scikit-learn"])
    built = env.fingerprint()
    monkeypatch.setenv("PARALLELRUN_ENVIRONMENT", "current")
    current = env.fingerprint()
    monkeypatch.delenv("PARALLELRUN_ENVIRONMENT")
    assert current != built and env.fingerprint() == built


def test_spark_settings_warn_exactly_once() -> None:
    env = Environment("spark")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.spark.precache_packages = False
        env.spark.packages = ["x"]
    assert [str(w.message) for w in caught] == [
        "Environment 'spark': spark settings are ignored because parallelrun does not run Spark; the "
        "environment's pip packages are installed into a virtual environment instead."]
    assert env.spark.precache_packages is False


def test_a_build_held_by_another_process_times_out_with_a_message(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl
    import os

    from parallelrun.workspace import _venv

    monkeypatch.setattr(_venv, "BUILD_TIMEOUT", 0.3)
    envs = tmp_path / "envs"
    envs.mkdir()
    fd = os.open(envs / "abc.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another build holds it
    try:
        with pytest.raises(EnvironmentBuildError, match=r"waited 0 s for another build holding .*abc\.lock; "
                                                        "if no build is running, delete that file"):
            _venv.build(envs, "abc", [PACKAGE], [])
    finally:
        os.close(fd)
    assert not (envs / "abc").exists()
