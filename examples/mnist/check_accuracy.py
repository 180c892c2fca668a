"""Score the digits job's output against the labels.

Exits 1 if accuracy is below --min, or if any image is missing from the output, appears more than once,
or is not in the labels: exactly-once output is part of what the example demonstrates.

    python check_accuracy.py [--output out/digits/parallel_run_step.txt] [--labels data/labels.csv] [--min 0.9]
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "out" / "digits" / "parallel_run_step.txt")
    parser.add_argument("--labels", type=Path, default=HERE / "data" / "labels.csv")
    parser.add_argument("--min", type=float, default=0.9, help="lowest acceptable accuracy")
    args = parser.parse_args()

    with open(args.labels, newline="") as f:
        labels = {row["file"]: row["label"] for row in csv.DictReader(f)}
    predicted: dict[str, str] = {}
    seen: Counter[str] = Counter()
    for line in args.output.read_text().splitlines():
        if not line.strip():
            continue
        name, _, digit = line.partition(":")
        seen[name.strip()] += 1
        predicted[name.strip()] = digit.strip()

    problems = []
    for kind, names in [
        ("missing", sorted(labels.keys() - seen.keys())),
        ("duplicated", sorted(name for name, n in seen.items() if n > 1)),
        ("unknown", sorted(seen.keys() - labels.keys())),
    ]:
        if names:
            problems.append(f"{len(names)} {kind} image(s), e.g. {', '.join(names[:5])}")

    correct = sum(predicted.get(name) == label for name, label in labels.items())
    accuracy = correct / len(labels) if labels else 0.0
    print(f"accuracy: {accuracy:.2f} ({correct} of {len(labels)} images)")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if accuracy < args.min:
        print(f"error: accuracy {accuracy:.3f} is below --min {args.min}", file=sys.stderr)
    return 1 if problems or accuracy < args.min else 0


if __name__ == "__main__":
    sys.exit(main())
