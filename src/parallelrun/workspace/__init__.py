"""Azure ML SDK v1's workspace objects, local-first: workspace, datastores, datasets, models,
environments and compute targets, kept in a workspace folder (see ``workspace.py`` for its layout)."""

from ._datastore_blob import AzureBlobDatastore
from ._datastore_local import LocalDatastore
from ._datastore_s3 import S3Datastore
from .compute import ComputeTarget, LocalCompute, RayCompute
from .dataset import Dataset, DatasetConsumptionConfig, FileDataset, TabularDataset
from .datastore import DataPath, Datastore
from .environment import (
    DEFAULT_CPU_IMAGE,
    DEFAULT_GPU_IMAGE,
    CondaDependencies,
    Environment,
    EnvironmentBuildError,
)
from .model import Model
from .workspace import Workspace

# Imported for its registration: ``Run.experiment`` builds Experiments through the hook it sets.
from . import experiment as _experiment  # noqa: E402, F401  isort: skip

__all__ = [
    "AzureBlobDatastore",
    "DEFAULT_CPU_IMAGE",
    "DEFAULT_GPU_IMAGE",
    "ComputeTarget",
    "CondaDependencies",
    "DataPath",
    "Dataset",
    "DatasetConsumptionConfig",
    "Datastore",
    "Environment",
    "EnvironmentBuildError",
    "FileDataset",
    "LocalCompute",
    "LocalDatastore",
    "Model",
    "RayCompute",
    "S3Datastore",
    "TabularDataset",
    "Workspace",
]
