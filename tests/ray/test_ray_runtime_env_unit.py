"""The actors' runtime_env as pure functions of the job (no Ray started): relative paths, the merge of
variables, the one-interpreter rule, and what a remote cluster gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import parallelrun
from parallelrun.errors import UsageError
from parallelrun.execution import ray_runtime_env as rte

pytestmark = pytest.mark.ray

SRC = str(Path(parallelrun.__file__).resolve().parent.parent)


def test_relative_paths_are_the_job_folders(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "pkg-1.0-py3-none-any.whl").write_text("")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "env.yml").write_text("dependencies: []\n")
    (tmp_path / "mods").mkdir()
    given = {
        "working_dir": "code",  # need not exist yet: Ray says so if it still does not
        "py_modules": ["mods", "missing", "s3://bucket/mods.zip", "/abs/mods"],
        "pip": ["wheels/pkg-1.0-py3-none-any.whl", "numpy==2.0", "pkg @ https://example.com/pkg.whl",
                "./not-there.whl"],
        "uv": {"packages": "requirements.txt", "uv_check": False},
        "conda": "env.yml",
        "env_vars": {"A": "1"},
    }

    got = rte.resolve_paths(given, str(tmp_path))

    assert got == {
        "working_dir": str(tmp_path / "code"),
        "py_modules": [str(tmp_path / "mods"), "missing", "s3://bucket/mods.zip", "/abs/mods"],
        "pip": [str(tmp_path / "wheels" / "pkg-1.0-py3-none-any.whl"), "numpy==2.0",
                "pkg @ https://example.com/pkg.whl", "./not-there.whl"],
        "uv": {"packages": str(tmp_path / "requirements.txt"), "uv_check": False},
        "conda": str(tmp_path / "env.yml"),
        "env_vars": {"A": "1"},
    }
    assert given["working_dir"] == "code"  # the spec's own value is left as written


def test_a_requirements_file_and_a_conda_environment_name(tmp_path: Path) -> None:
    (tmp_path / "reqs.txt").write_text("numpy\n")
    got = rte.resolve_paths({"pip": "reqs.txt", "conda": "my-env", "working_dir": "s3://b/wd.zip"}, str(tmp_path))
    assert got == {"pip": str(tmp_path / "reqs.txt"), "conda": "my-env", "working_dir": "s3://b/wd.zip"}


@pytest.mark.parametrize("key", rte.INTERPRETER_KEYS)
def test_an_environment_and_a_runtime_env_interpreter_are_refused_together(key: str) -> None:
    with pytest.raises(UsageError, match=rf"virtual environment \(/envs/abc/bin/python\).*runtime_env sets {key}:"
                                         r".*Ray would use only one"):
        rte.check_interpreter({key: "x", "env_vars": {"A": "1"}}, "/envs/abc/bin/python")
    rte.check_interpreter({key: "x"}, None)  # no Environment: runtime_env chooses
    rte.check_interpreter({"env_vars": {"A": "1"}, "working_dir": "/w"}, "/envs/abc/bin/python")  # no clash


def _job_env(tmp_path: Path, user: dict[str, object], *, python: str | None = None,
             upload: bool = False) -> tuple[dict[str, object], str | None]:
    return rte.job_runtime_env(user, python=python, upload=upload, compute="ray://10.0.0.5:10001",
                               source_directory=str(tmp_path / "scripts"), working_dir=str(tmp_path),
                               excluded=[str(tmp_path / "out"), str(tmp_path / "ws" / "runs" / "r1")])


def test_the_job_level_runtime_env_leaves_env_vars_to_the_actors(tmp_path: Path) -> None:
    assert _job_env(tmp_path, {"pip": ["numpy"], "env_vars": {"A": "1"}}) == ({"pip": ["numpy"]}, None)


def test_a_remote_cluster_gets_the_job_folder_and_parallelrun(tmp_path: Path) -> None:
    env, shipped = _job_env(tmp_path, {"pip": ["numpy"], "excludes": ["*.ckpt"], "py_modules": ["/m"]}, upload=True)
    assert shipped == str(tmp_path)
    assert env == {"pip": ["numpy"], "working_dir": str(tmp_path),
                   "excludes": [".git", "__pycache__", ".parallelrun", ".venv", "*.ckpt", "/out", "/ws/runs/r1"],
                   "py_modules": ["/m", str(Path(parallelrun.__file__).parent)]}


def test_a_remote_cluster_refuses_an_environment_and_a_working_dir(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"exists only on this machine.*ray: \{runtime_env: \{pip: \[\.\.\.\]\}\}"):
        _job_env(tmp_path, {}, python="/envs/abc/bin/python", upload=True)
    with pytest.raises(UsageError, match="would both be the workers' working_dir"):
        _job_env(tmp_path, {"working_dir": "/w"}, upload=True)


def test_each_actor_gets_the_merged_variables_and_the_environments_interpreter() -> None:
    user = {"working_dir": "/w", "env_vars": {"A": "runtime_env", "SHARED": "runtime_env", "PYTHONPATH": "/mine"}}

    env = rte.actor_runtime_env(user, python="/envs/abc/bin/python", upload=False, joined_session=False,
                                environment_variables={"B": "job", "SHARED": "job"})

    assert env == {"env_vars": {"A": "runtime_env", "SHARED": "job", "B": "job",
                                "PYTHONPATH": os.pathsep.join([SRC, "/mine"])},
                   "py_executable": "/envs/abc/bin/python"}


def test_in_the_callers_own_ray_session_each_actor_carries_the_runtime_env() -> None:
    env = rte.actor_runtime_env({"pip": ["numpy"], "env_vars": {"A": "1"}}, python=None, upload=False,
                                joined_session=True, environment_variables={})
    assert env == {"env_vars": {"A": "1", "PYTHONPATH": os.pathsep.join([SRC, "${PYTHONPATH}"])},
                   "pip": ["numpy"]}
    with pytest.raises(UsageError, match="working_dir needs Ray to upload local folders.*ray.shutdown"):
        rte.actor_runtime_env({"working_dir": "/w"}, python=None, upload=False, joined_session=True,
                              environment_variables={})


def test_an_actor_has_no_runtime_env_when_the_clusters_processes_have_parallelrun_on_their_path() -> None:
    """A private instance is started with parallelrun's folder on PYTHONPATH (``path_set``): its actors then
    carry no runtime_env, so that they take the workers Ray started ahead, unless the job sets something."""
    assert rte.actor_runtime_env({}, python=None, upload=False, joined_session=False, environment_variables={},
                                 path_set=True) == {}
    assert rte.actor_runtime_env({}, python=None, upload=False, joined_session=False,
                                 environment_variables={"OMP_NUM_THREADS": "1"}, path_set=True) == {
        "env_vars": {"OMP_NUM_THREADS": "1"}}
    # The job's own PYTHONPATH replaces the instance's, so parallelrun's folder goes in front of it again.
    assert rte.env_vars({"env_vars": {"PYTHONPATH": "/mine"}}, {}, upload=False, path_set=True) == {
        "PYTHONPATH": os.pathsep.join([SRC, "/mine"])}
    assert rte.with_source_path(None) == SRC
    assert rte.with_source_path("/a") == os.pathsep.join([SRC, "/a"])


def test_on_a_remote_cluster_the_actors_path_is_left_to_the_upload() -> None:
    assert rte.env_vars({"env_vars": {"A": 1}}, {"B": "2"}, upload=True) == {"A": "1", "B": "2"}


def test_the_documented_runtime_env_is_valid_and_its_paths_are_the_job_folders(tmp_path: Path) -> None:
    import re

    import yaml

    from parallelrun.config import validate_spec

    doc = (Path(__file__).resolve().parents[2] / "docs" / "ray.md").read_text()
    section = doc[doc.index("## runtime_env: packages, files and variables for the actors"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "the runtime_env section of docs/ray.md has no yaml block"
    spec = validate_spec({"name": "digits", "entry_script": "s.py", "inputs": [{"type": "file", "path": "d"}],
                          "compute": "ray", **yaml.safe_load(block.group(1))})
    assert spec.ray is not None and spec.ray.namespace == "team-a"
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "mytool-1.2.3-py3-none-any.whl").write_text("")

    env = rte.resolve_paths(spec.ray.runtime_env, str(tmp_path))

    assert env["working_dir"] == str(tmp_path / "lib")
    assert env["pip"]["packages"] == ["rapidfuzz>=3", str(tmp_path / "wheels" / "mytool-1.2.3-py3-none-any.whl")]
    assert rte.env_vars(env, spec.environment_variables, upload=True) == {
        "HF_HOME": "/mnt/cache", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
