"""W3 entry script: score rows of 65 float features with an ONNX logistic regression.

Arguments: --model PATH. Returns one row per input row: the predicted class and its probability.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

_session: Any = None


def init() -> None:
    global _session
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    args, _ = parser.parse_known_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    _session = ort.InferenceSession(args.model, sess_options=options, providers=["CPUExecutionProvider"])


def run(mini_batch: pd.DataFrame) -> pd.DataFrame:
    x = mini_batch.to_numpy(dtype=np.float32)
    labels, probs = _session.run(None, {"input": x})
    return pd.DataFrame({"label": labels, "p": np.round(probs.max(axis=1), 4)}, index=mini_batch.index)
