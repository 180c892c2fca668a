"""Entry script: score iris rows with an ONNX model.

Job arguments: --model PATH (relative to the job file's folder, the worker's current directory).
Returns one row per input row: its position in the CSV, the predicted species, and that prediction's
probability.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import pandas as pd

from parallelrun import EntryScript

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
_session: ort.InferenceSession | None = None


def init() -> None:
    """Load the model once per worker process."""
    global _session
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    # parse_known_args: the engine may pass arguments of its own.
    args, _ = parser.parse_known_args()

    options = ort.SessionOptions()
    # Parallelism comes from the worker processes; more threads per process would oversubscribe the CPUs.
    options.intra_op_num_threads = 1
    _session = ort.InferenceSession(args.model, sess_options=options, providers=["CPUExecutionProvider"])
    EntryScript().logger.info("loaded model %s", args.model)


def run(mini_batch: pd.DataFrame) -> pd.DataFrame:
    """Score every row of the mini-batch in one inference call."""
    assert _session is not None, "init() was not called"
    features = mini_batch[FEATURES].to_numpy(dtype=np.float32)
    labels, probabilities = _session.run(None, {"input": features})
    return pd.DataFrame(
        {
            "row": mini_batch.index,  # the row's position in the CSV, so results can be joined back
            "predicted": labels,
            "probability": probabilities.max(axis=1).round(4),
        }
    )
