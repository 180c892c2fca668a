"""Parallel job entry script: score CSV files with an MLflow model, as on Azure ML.

init() reads --model from the job's program_arguments (the model folder, a uri_folder input) and loads it
with mlflow.sklearn.load_model; run() gets a mini-batch of file paths and returns one element per file (Azure's
contract: one result element per succeeded input): the file's rows scored, one line per row.
"""

import argparse
import os

import mlflow.sklearn
import pandas as pd

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def init():
    global model
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    args, _ = parser.parse_known_args()
    model = mlflow.sklearn.load_model(args.model)


def run(mini_batch):
    results = []
    for path in mini_batch:
        rows = pd.read_csv(path)
        name = os.path.basename(path)
        scored = zip(rows["id"], rows["label"], model.predict(rows[FEATURES]), strict=True)
        results.append("\n".join(f"{name},{row_id},{label},{predicted}" for row_id, label, predicted in scored))
    return results
