"""W7 entry script: an "embedding model" that returns 256 float32 per input row (~1 KB a row).

The vectors are pseudo-random, seeded by the row ids, so any contender computes the same output. What W7
measures is the output path (1 GB for 1,000,000 rows), not the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DIM = 256
COLUMNS = [f"e{i:03d}" for i in range(DIM)]


def init() -> None:
    pass


def run(mini_batch: pd.DataFrame) -> pd.DataFrame:
    ids = mini_batch["id"].to_numpy()
    rng = np.random.default_rng(int(ids[0]) if len(ids) else 0)
    vectors = rng.standard_normal((len(ids), DIM), dtype=np.float32)
    out = pd.DataFrame(vectors, columns=COLUMNS)
    out.insert(0, "id", ids)
    return out
