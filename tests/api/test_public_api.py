"""The public API is exactly the curated names, each importable; importing the package stays light."""

import subprocess
import sys

import parallelrun

INTENDED = {
    # the engine
    "EntryScript", "run_job", "resume_run", "RunResult",
    # errors
    "ParallelRunError", "JobSpecError", "UsageError", "EntryScriptError", "DatasetError", "ResumeError",
    "MissingExtraError", "JobFailedError",
    # the Azure-style workflow
    "Workspace", "Datastore", "DataPath", "Dataset", "FileDataset", "TabularDataset",
    "DatasetConsumptionConfig", "Model", "Environment", "CondaDependencies", "ComputeTarget", "LocalCompute",
    "RayCompute", "ParallelRunConfig", "ParallelRunStep", "PythonScriptStep", "PipelineData",
    "OutputFileDatasetConfig", "Pipeline", "Experiment", "Run", "PipelineRun", "StepRun", "PortDataReference",
    "RunDetails",
}


def test_exports_are_exactly_the_intended_names() -> None:
    assert set(parallelrun.__all__) == INTENDED


def test_every_export_resolves() -> None:
    for name in parallelrun.__all__:
        assert getattr(parallelrun, name) is not None, name


def test_import_is_light() -> None:
    # Workers import parallelrun for EntryScript: that must not pull in the driver, pandas, pydantic,
    # the web dashboard or ray.
    code = ("import sys, parallelrun; heavy = [m for m in ('pandas', 'pydantic', 'fastapi', 'ray', "
            "'parallelrun.runner') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_table_matches_all() -> None:
    eager = {"EntryScript", "ParallelRunError", "JobSpecError", "UsageError", "EntryScriptError", "DatasetError",
             "ResumeError", "MissingExtraError", "JobFailedError"}
    assert set(parallelrun._LAZY) | eager == set(parallelrun.__all__)
