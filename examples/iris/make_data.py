"""Make the iris example's inputs: a CSV of flowers and an ONNX logistic-regression model.

The rows are scikit-learn's bundled iris data repeated --repeat times, so the job has several
mini-batches; nothing is downloaded. Everything is written next to this file and re-running overwrites it.

    python make_data.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="times to repeat the 150 rows")
    args = parser.parse_args()
    started = time.perf_counter()

    iris = load_iris()
    flowers = pd.DataFrame(iris.data, columns=FEATURES)
    flowers["label"] = iris.target_names[iris.target]
    csv_path = HERE / "data" / "iris.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([flowers] * args.repeat, ignore_index=True).to_csv(csv_path, index=False)

    x, y = flowers[FEATURES].to_numpy(dtype="float32"), flowers["label"]
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    onnx_model = convert_sklearn(
        clf,
        initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
        # Without zipmap the probabilities come out as a plain [N, 3] array instead of a list of dicts.
        options={id(clf): {"zipmap": False}},
    )
    model_path = HERE / "models" / "iris.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(onnx_model.SerializeToString())

    size_kb = csv_path.stat().st_size / 1024
    print(f"wrote {csv_path.relative_to(HERE)} ({len(flowers) * args.repeat} rows, {size_kb:.0f} KB)")
    print(f"wrote {model_path.relative_to(HERE)} (training accuracy {clf.score(x, y):.3f})")
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
