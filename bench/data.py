"""Deterministic benchmark inputs, generated once into a cache folder (``bench/.data`` by default).

Nothing is downloaded: images come from scikit-learn's bundled digits, tabular rows from a seeded NumPy
generator, and the ONNX models are trained here. Each data set is written into a temporary folder and
renamed into place when complete, so an interrupted generation is simply redone next time.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

SEED = 20240601
FEATURES = 65
DIGIT_SIDE = 28


def _cached(root: Path, name: str, make: Callable[[Path], None], log: Callable[[str], None]) -> Path:
    """``root/name``, made by ``make(tmp)`` if it does not exist yet."""
    final = root / name
    if final.exists():
        return final
    tmp = root / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    log(f"generating {name} (once; cached in {root}) ...")
    make(tmp)
    os.replace(tmp, final)
    log(f"generated {name} in {time.perf_counter() - t0:.1f} s")
    return final


# --- W1 and W4: many tiny files ----------------------------------------------------------------------
def tiny_files(root: Path, n: int, log: Callable[[str], None]) -> Path:
    """``n`` files of a few bytes (their number) in one flat folder: W1."""

    def make(tmp: Path) -> None:
        d = tmp / "files"
        d.mkdir()
        for i in range(n):
            fd = os.open(d / f"f{i:07d}.txt", os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, f"{i}\n".encode())
            os.close(fd)

    return _cached(root, f"w1-files-{n}", make, log) / "files"


def file_tree(root: Path, n: int, log: Callable[[str], None], per_dir: int = 1000) -> Path:
    """``n`` empty files, ``per_dir`` to a folder (``d0000/f0000000`` ...): W4's planning input."""

    def make(tmp: Path) -> None:
        d = tmp / "tree"
        for i in range(n):
            if i % per_dir == 0:
                sub = d / f"d{i // per_dir:04d}"
                sub.mkdir(parents=True)
            os.close(os.open(sub / f"f{i:07d}", os.O_WRONLY | os.O_CREAT, 0o644))

    return _cached(root, f"w4-tree-{n}", make, log) / "tree"


def flat_files(root: Path, n: int, log: Callable[[str], None]) -> Path:
    """``n`` empty files in ONE folder (``f0000000`` ...): W4's flat variant, listed in packed runs."""

    def make(tmp: Path) -> None:
        d = tmp / "files"
        d.mkdir()
        for i in range(n):
            os.close(os.open(d / f"f{i:07d}", os.O_WRONLY | os.O_CREAT, 0o644))

    return _cached(root, f"w4-flat-{n}", make, log) / "files"


# --- W2: digit images and an ONNX MLP ----------------------------------------------------------------
def _digit_images() -> tuple[list, np.ndarray, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for pixels in digits.data:
        small = Image.fromarray((pixels.reshape(8, 8) * (255 / 16)).round().astype(np.uint8), mode="L")
        images.append(small.resize((DIGIT_SIDE, DIGIT_SIDE), Image.Resampling.BILINEAR))
    features = np.stack([np.asarray(im, dtype=np.float32).reshape(-1) / 255 for im in images])
    return images, features, digits.target


def digits_model(root: Path, log: Callable[[str], None], max_iter: int = 200) -> Path:
    """An MLP 784 -> 128 -> 10 trained on the upscaled digits, exported to ONNX (input ``input``).
    (The smoke run trains it briefly: its accuracy does not matter to any timing.)"""

    def make(tmp: Path) -> None:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        _, features, target = _digit_images()
        clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=max_iter, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(features, target)
        model = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, DIGIT_SIDE * DIGIT_SIDE]))],
                                options={id(clf): {"zipmap": False}})
        (tmp / "digits.onnx").write_bytes(model.SerializeToString())

    return _cached(root, f"model-digits-{max_iter}", make, log) / "digits.onnx"


def digit_pngs(root: Path, n: int, log: Callable[[str], None]) -> Path:
    """``n`` 28x28 grayscale PNGs (scikit-learn's digits, cycled) in one folder: W2, W5, W6."""

    def make(tmp: Path) -> None:
        images, _, _ = _digit_images()
        d = tmp / "png"
        d.mkdir()
        for i in range(n):
            images[i % len(images)].save(d / f"digit_{i:06d}.png")

    return _cached(root, f"w2-png-{n}", make, log) / "png"


# --- W3: one big CSV (and the same rows in Parquet), an ONNX logistic regression ---------------------
def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Features as integers 0..9999 (the CSV writes them as 0.dddd)."""
    return rng.integers(0, 10000, size=(n, FEATURES), dtype=np.int32)


def _csv_bytes(q: np.ndarray) -> bytes:
    """Rows of 0.dddd values, comma separated: about 7 bytes a value, formatted without Python loops."""
    n = q.shape[0]
    out = np.empty((n, FEATURES, 7), dtype=np.uint8)
    out[:, :, 0] = ord("0")
    out[:, :, 1] = ord(".")
    out[:, :, 2] = 48 + q // 1000
    out[:, :, 3] = 48 + q // 100 % 10
    out[:, :, 4] = 48 + q // 10 % 10
    out[:, :, 5] = 48 + q % 10
    out[:, :, 6] = ord(",")
    out[:, -1, 6] = ord("\n")
    return out.tobytes()


def _weights() -> np.ndarray:
    return np.random.default_rng(SEED + 1).normal(size=FEATURES)


def tabular(root: Path, rows: int, log: Callable[[str], None], row_group: int = 16384) -> tuple[Path, Path]:
    """``rows`` x 65 float columns as ``rows.csv`` (header f0..f64; ~455 bytes a row) and ``rows.parquet``
    (row groups of ``row_group`` rows, ~8.5 MB each uncompressed). Returns (csv, parquet)."""

    def make(tmp: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rng = np.random.default_rng(SEED)
        names = [f"f{i}" for i in range(FEATURES)]
        schema = pa.schema([(c, pa.float64()) for c in names])
        chunk = row_group * 6  # a whole number of row groups: only the last one is short
        with open(tmp / "rows.csv", "wb") as f, pq.ParquetWriter(tmp / "rows.parquet", schema) as pw:
            f.write((",".join(names) + "\n").encode())
            for start in range(0, rows, chunk):
                q = _rows(rng, min(chunk, rows - start))
                f.write(_csv_bytes(q))
                x = q / 10000.0
                table = pa.Table.from_arrays([pa.array(x[:, i]) for i in range(FEATURES)], schema=schema)
                pw.write_table(table, row_group_size=row_group)

    d = _cached(root, f"w3-rows-{rows}", make, log)
    return d / "rows.csv", d / "rows.parquet"


def tabular_model(root: Path, log: Callable[[str], None]) -> Path:
    """A logistic regression on the 65 features (labels from a fixed linear rule), as ONNX."""

    def make(tmp: Path) -> None:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.linear_model import LogisticRegression

        x = _rows(np.random.default_rng(SEED + 2), 20_000) / 10000.0
        y = (x - 0.5) @ _weights() > 0
        clf = LogisticRegression(max_iter=500).fit(x, y)
        model = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, FEATURES]))],
                                options={id(clf): {"zipmap": False}})
        (tmp / "lr.onnx").write_bytes(model.SerializeToString())

    return _cached(root, "model-lr", make, log) / "lr.onnx"


def warm(paths: list[Path]) -> None:
    """Read inputs once so that no peer pays for a cold page cache (nothing is timed here)."""
    for p in paths:
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
        elif p.is_dir():
            for dirpath, _, files in os.walk(p):
                for name in files:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        f.read()
