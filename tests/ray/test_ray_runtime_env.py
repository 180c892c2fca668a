"""RayCompute's runtime_env on a real head: working_dir, env_vars (merged with the job's variables),
namespace, and pip packages the driver does not have, installed by Ray for the actors.

Every path in the runtime_env below is relative: it is the job folder's (pytest runs from elsewhere), so
these runs also check that parallelrun resolves them there.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ray_jobs import RayHead, make_job, only_run_dir, output_lines

from parallelrun import UsageError, run_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # runtime_env tests start their own Ray head: ~20 s; CI runs it (make test-slow)

# One output row per item: the item's name and what the actor saw, as JSON.
PROBE_SCRIPT = '''\
import json
import os
from pathlib import Path

import ray


def init():
    pass


def run(mini_batch, context):
    seen = {"namespace": ray.get_runtime_context().namespace, "cwd": os.getcwd()}
    for name in ("FROM_RUNTIME_ENV", "FROM_JOB", "SHARED"):
        seen[name] = os.environ.get(name)
    if os.environ.get("IMPORT") == "wdmod":
        import wdmod
        seen["module"], seen["data"] = wdmod.__file__, wdmod.data()
    if os.environ.get("IMPORT") == "prtiny":
        import prtiny
        seen["module"], seen["version"] = prtiny.__file__, prtiny.__version__
    return [f"{Path(p).name} {json.dumps(seen, sort_keys=True)}" for p in mini_batch]
'''


def _probe_job(folder: Path, **fields: object) -> Path:
    job = make_job(folder, files=4, process_count_per_node=1, mini_batch_size=2, **fields)  # type: ignore[arg-type]
    (folder / "scripts" / "probe.py").write_text(PROBE_SCRIPT)
    spec = yaml.safe_load(job.read_text())
    spec["entry_script"] = "probe.py"
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    return job


def _rows(result: object) -> dict[str, dict[str, str]]:
    """item name -> what the actor that ran it saw; every item exactly once."""
    lines = output_lines(result)
    names = [line.split(" ", 1)[0] for line in lines]
    assert sorted(names) == [f"f{i:03d}.txt" for i in range(4)], lines
    return {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in lines}


@pytest.mark.timeout(180)
def test_working_dir_env_vars_and_namespace_reach_the_actors(ray_head: RayHead, tmp_path: Path) -> None:
    folder = tmp_path / "job"
    lib = folder / "lib"
    lib.mkdir(parents=True)
    (lib / "wdmod.py").write_text(
        "from pathlib import Path\n\n\ndef data():\n    return Path(__file__).with_name('data.txt').read_text()\n")
    (lib / "data.txt").write_text("shipped with the working_dir")
    job = _probe_job(folder, env={"IMPORT": "wdmod", "FROM_JOB": "job", "SHARED": "job"}, ray={
        "namespace": "team-rte",
        "runtime_env": {"working_dir": "lib",  # relative: the job folder's
                        "env_vars": {"FROM_RUNTIME_ENV": "runtime_env", "SHARED": "runtime_env"}}})

    res = run_job(job, overrides=[f"compute={ray_head.address}"], workspace=tmp_path / "ws", progress="quiet")

    assert res.status == "Completed", res.summary()
    for name, seen in _rows(res).items():
        assert seen["namespace"] == "team-rte", name
        # runtime_env env_vars and the job's environment_variables are merged; the job's win on a clash
        assert (seen["FROM_RUNTIME_ENV"], seen["FROM_JOB"], seen["SHARED"]) == ("runtime_env", "job", "job")
        # the working_dir is importable (Ray's uploaded copy, under the head's temp folder, not lib/) ...
        assert seen["data"] == "shipped with the working_dir"
        assert Path(seen["module"]).is_relative_to(ray_head.temp_dir), seen["module"]
        assert "working_dir_files" in seen["module"]
        # ... and the actor's current folder stays the job folder, where relative paths in arguments point
        assert Path(seen["cwd"]) == folder.resolve()


def _tiny_wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel made by hand (no network, no build backend): prtiny with __version__."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"prtiny-{version}-py3-none-any.whl"
    info = f"prtiny-{version}.dist-info"
    files = {
        "prtiny/__init__.py": f"__version__ = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: prtiny\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n")
    return wheel


@pytest.mark.slow  # Ray copies the cluster's virtual environment and pip-installs into it: a minute or more
@pytest.mark.timeout(600)
def test_a_runtime_env_pip_package_the_driver_lacks_reaches_the_actors(ray_head: RayHead, tmp_path: Path) -> None:
    assert importlib.util.find_spec("prtiny") is None  # not in the driver's environment
    folder = tmp_path / "job"
    wheel = _tiny_wheel(folder / "wheels", "1.2.3")
    # --no-index: pip never asks a package index, so the test is offline and deterministic
    pip = {"packages": [str(wheel.relative_to(folder))],
           "pip_install_options": ["--no-index", "--disable-pip-version-check", "--no-cache-dir"]}
    job = _probe_job(folder, env={"IMPORT": "prtiny"}, ray={"runtime_env": {"pip": pip}})

    res = run_job(job, overrides=[f"compute={ray_head.address}"], workspace=tmp_path / "ws", progress="quiet")

    assert res.status == "Completed", res.summary()
    for name, seen in _rows(res).items():
        assert seen["version"] == "1.2.3", name
        assert "runtime_resources/pip" in seen["module"], seen["module"]  # Ray's environment for the job
    assert importlib.util.find_spec("prtiny") is None  # and still not in the driver's


@pytest.mark.timeout(60)
def test_an_environment_and_runtime_env_pip_together_are_refused_before_anything_runs(
        ray_head: RayHead, tmp_path: Path) -> None:
    import sys

    job = _probe_job(tmp_path / "job", ray={"runtime_env": {"pip": ["rapidfuzz"]}})

    # python: the interpreter an Environment with packages gives the run (its virtual environment)
    with pytest.raises(UsageError) as e:
        run_job(job, overrides=[f"compute={ray_head.address}"], workspace=tmp_path / "ws", progress="quiet",
                record_fields={"python": sys.executable})

    message = " ".join(str(e.value).split())
    assert f"Environment's virtual environment ({sys.executable})" in message
    assert "runtime_env sets pip" in message and "Ray would use only one" in message
    assert not (tmp_path / "job" / "out").exists() or not any((tmp_path / "job" / "out").iterdir())
    rec = json.loads((only_run_dir(tmp_path / "ws") / "run.json").read_text())
    assert rec["status"] == "Failed" and "the workers could not start" in rec["reason"]



@pytest.fixture
def one_try_head(short_tmp: Path) -> Iterator[RayHead]:
    """A head whose runtime_env agent tries a failing set-up once (Ray's default is 3 tries, each copying
    the virtual environment again: over 5 minutes on a busy 2-core machine)."""
    head = RayHead(short_tmp / "ray-one-try", num_cpus=2, env={"RUNTIME_ENV_RETRY_TIMES": "1"})
    try:
        yield head
    finally:
        head.stop()


@pytest.mark.slow  # Ray copies the cluster's virtual environment before pip fails
@pytest.mark.timeout(600)
def test_a_pip_package_that_cannot_be_installed_fails_the_job_with_pips_message(one_try_head: RayHead,
                                                                                 tmp_path: Path) -> None:
    pip = {"packages": ["prmissing==9.9"], "pip_install_options": ["--no-index", "--disable-pip-version-check"]}
    job = _probe_job(tmp_path / "job", ray={"runtime_env": {"pip": pip}})

    res = run_job(job, overrides=[f"compute={one_try_head.address}"], workspace=tmp_path / "ws", progress="quiet")

    assert res.status == "Failed", res.summary()
    summary = res.summary()
    assert "init() failed in every worker" in summary and "Failed to set up runtime environment" in summary
    assert "No matching distribution found for prmissing==9.9" in summary  # pip's own words
    assert "0 succeeded" in summary
    out = Path(res.output_file) if res.output_file else None
    assert out is None or not out.is_file() or out.read_text() == ""  # no row written
