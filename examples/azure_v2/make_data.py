"""Make the Azure ML v2 example's inputs: iris rows as a CSV, and a scikit-learn model saved with MLflow.

Nothing is downloaded: the rows are scikit-learn's bundled iris data (with an ``id`` column), and the
model is a logistic regression trained on them, saved as an MLflow model folder (``MLmodel`` and the
pickled model), as Azure ML jobs and registries keep them. Re-running overwrites both.

    python make_data.py
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import mlflow.sklearn
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main() -> None:
    iris = load_iris()
    rows = pd.DataFrame(iris.data, columns=FEATURES)
    rows.insert(0, "id", range(len(rows)))
    rows["label"] = iris.target_names[iris.target]
    (HERE / "data").mkdir(exist_ok=True)
    rows.to_csv(HERE / "data" / "iris.csv", index=False)

    model = LogisticRegression(max_iter=1000).fit(rows[FEATURES], rows["label"])
    target = HERE / "models" / "iris-mlflow"
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(exist_ok=True)
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # its note on pickle formats: this model is ours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # cloudpickle: loads with mlflow-skinny alone (the skops format needs the skops package).
        mlflow.sklearn.save_model(model, str(target),
                                  serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    print(f"wrote data/iris.csv ({len(rows)} rows) and models/iris-mlflow/ "
          f"(training accuracy {model.score(rows[FEATURES], rows['label']):.3f})")


if __name__ == "__main__":
    main()
