"""Shared pieces of the Azure ML v2 tests: iris data, an MLflow model folder, MLTable folders."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pandas as pd

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

# A tabular entry script in Azure's v2 style: --model from program_arguments, loaded with mlflow.
TABULAR_SCORE = '''
import argparse

import mlflow.sklearn

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def init():
    global model, tag
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--tag", default="none")
    args, _ = parser.parse_known_args()
    model = mlflow.sklearn.load_model(args.model)
    tag = args.tag


def run(mini_batch):
    predicted = model.predict(mini_batch[FEATURES])
    return [f"{i},{label},{p},{tag}" for i, label, p in zip(mini_batch["id"], mini_batch["label"], predicted)]
'''


def iris_rows() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    iris = load_iris()
    rows = pd.DataFrame(iris.data, columns=FEATURES)
    rows.insert(0, "id", range(len(rows)))
    rows["label"] = iris.target_names[iris.target]
    return rows


def write_parts(rows: pd.DataFrame, folder: Path, parts: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(rows) // parts)
    paths = []
    for i in range(parts):
        p = folder / f"part-{i}.csv"
        rows.iloc[i * size:(i + 1) * size].to_csv(p, index=False)
        paths.append(p)
    return paths


def save_mlflow_model(rows: pd.DataFrame, target: Path) -> None:
    """A logistic regression saved as an MLflow model folder (cloudpickle: mlflow-skinny loads it)."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=1000).fit(rows[FEATURES], rows["label"])
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.sklearn.save_model(model, str(target),
                                  serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)


MLTABLE_CSV = """\
$schema: https://azuremlschemas.azureedge.net/latest/MLTable.schema.json
type: mltable
paths:
  - pattern: ./parts/*.csv
transformations:
  - read_delimited:
      delimiter: ","
      encoding: ascii
      header: all_files_same_headers
"""
