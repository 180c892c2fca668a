"""Entry script: classify 28x28 digit PNGs with an ONNX model.

Job arguments: --model PATH (relative to the job file's folder, the worker's current directory).
Each result line is "<file name>: <digit>".
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np
import onnxruntime as ort
from PIL import Image

from parallelrun import EntryScript

_session: ort.InferenceSession | None = None
_logger: logging.Logger | None = None


def init() -> None:
    """Load the model once per worker process."""
    global _session, _logger
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    # parse_known_args: the engine may pass arguments of its own.
    args, _ = parser.parse_known_args()

    options = ort.SessionOptions()
    # Parallelism comes from the worker processes; more threads per process would oversubscribe the CPUs.
    options.intra_op_num_threads = 1
    _session = ort.InferenceSession(args.model, sess_options=options, providers=["CPUExecutionProvider"])
    _logger = EntryScript().logger
    _logger.info("loaded model %s", args.model)


def run(mini_batch: list[str]) -> list[str]:
    """Classify the images in one mini-batch with a single inference call."""
    assert _session is not None and _logger is not None, "init() was not called"
    if not mini_batch:
        return []
    pixels = np.stack(
        [np.asarray(Image.open(path).convert("L"), dtype=np.float32).reshape(-1) / 255 for path in mini_batch]
    )
    labels, _probabilities = _session.run(None, {"input": pixels})
    _logger.info("classified %d images", len(mini_batch))
    return [f"{os.path.basename(path)}: {digit}" for path, digit in zip(mini_batch, labels, strict=True)]
