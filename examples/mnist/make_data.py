"""Make the digits example's inputs: 28x28 PNGs, their labels, and an ONNX classifier.

The images are scikit-learn's bundled 8x8 digits upscaled to MNIST's size, so nothing is downloaded.
Everything is written next to this file and re-running overwrites it.

    python make_data.py [--count N] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent
SIDE = 28


def to_image(pixels: np.ndarray) -> Image.Image:
    """Upscale one 8x8 digit (values 0-16) to a 28x28 grayscale image (values 0-255)."""
    small = Image.fromarray((pixels.reshape(8, 8) * (255 / 16)).round().astype(np.uint8), mode="L")
    return small.resize((SIDE, SIDE), Image.Resampling.BILINEAR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=None, help="images to write (default: all 1797)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the train/test split and the model")
    args = parser.parse_args()
    started = time.perf_counter()

    digits = load_digits()
    images = [to_image(p) for p in digits.data]
    # Train on exactly the pixels the entry script will read back from the PNGs.
    features = np.stack([np.asarray(im, dtype=np.float32).reshape(-1) / 255 for im in images])
    count = len(images) if args.count is None else args.count

    image_dir = HERE / "data" / "digits"
    image_dir.mkdir(parents=True, exist_ok=True)
    for old in image_dir.glob("digit_*.png"):  # a smaller --count must not leave earlier images behind
        old.unlink()
    with open(HERE / "data" / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        for i in range(count):
            name = f"digit_{i:05d}.png"
            source = i % len(images)  # cycle through the dataset when more images are asked for
            images[source].save(image_dir / name)
            writer.writerow([name, int(digits.target[source])])

    x_train, x_test, y_train, y_test = train_test_split(
        features, digits.target, test_size=0.25, random_state=args.seed, stratify=digits.target
    )
    clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=300, random_state=args.seed)
    with warnings.catch_warnings():
        # Stopping a little before full convergence costs nothing here and keeps the run fast.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    onnx_model = convert_sklearn(
        clf,
        initial_types=[("input", FloatTensorType([None, SIDE * SIDE]))],
        # Without zipmap the probabilities come out as a plain [N, 10] array instead of a list of dicts.
        options={id(clf): {"zipmap": False}},
    )
    model_path = HERE / "models" / "digits.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(onnx_model.SerializeToString())

    print(f"wrote {count} images to {image_dir.relative_to(HERE)}/ and their labels to data/labels.csv")
    print(f"wrote {model_path.relative_to(HERE)} (held-out accuracy {clf.score(x_test, y_test):.3f})")
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
