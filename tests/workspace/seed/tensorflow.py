"""A stand-in for the part of TensorFlow 1.x that the seed tutorial's entry script calls.

The tutorial's ``digit_identification.py`` uses TF 1.13's graph API (``tf.reset_default_graph``,
``tf.train.import_meta_graph``, ``tf.Session``, ``Tensor.eval``). TF 1.x installs only on Python <= 3.7 and
TF 2 no longer has these names at the top level, so nothing here can run the script as written. This module
gives it exactly that API over a softmax-regression model trained locally with scikit-learn (see
``test_seed_tutorial.py``): ``<name>.meta`` is JSON naming the graph's tensors, ``<name>`` is an ``.npz``
holding the weights. Only the test puts it on the workers' path (it is saved into the tutorial's scripts
folder); it is not part of parallelrun.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

_graph: Graph | None = None


class Tensor:
    def __init__(self, name: str, graph: Graph) -> None:
        self.name = name
        self.graph = graph

    def eval(self, feed_dict: dict[Tensor, Any], session: Session) -> np.ndarray:
        (x,) = [np.asarray(v, dtype=np.float32) for t, v in feed_dict.items() if t.name == self.graph.input_name]
        weights = session.weights
        # Same scaling the model was trained with (pixels 0-255 -> 0-1).
        return (x / 255.0) @ weights["coef"].T + weights["intercept"]


class Graph:
    def __init__(self, meta: dict[str, str]) -> None:
        self.input_name = meta["input"]
        self.output_name = meta["output"]

    def get_tensor_by_name(self, name: str) -> Tensor:
        if name not in (self.input_name, self.output_name):
            raise KeyError(f"The name '{name}' refers to a Tensor which does not exist.")
        return Tensor(name, self)


class Session:
    def __init__(self) -> None:
        if _graph is None:
            raise RuntimeError("no graph: call tf.train.import_meta_graph first")
        self.graph = _graph
        self.weights: dict[str, np.ndarray] = {}


class _Saver:
    def restore(self, sess: Session, save_path: str) -> None:
        with np.load(save_path, allow_pickle=False) as data:
            sess.weights = {k: data[k] for k in data.files}


class train:  # noqa: N801 - TF's module name
    @staticmethod
    def import_meta_graph(meta_path: str) -> _Saver:
        global _graph
        with open(meta_path) as f:
            _graph = Graph(json.load(f))
        return _Saver()


def reset_default_graph() -> None:
    global _graph
    _graph = None
