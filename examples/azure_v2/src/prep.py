"""Command job: split the raw CSV into --parts files in the output folder, one mini-batch's worth each."""

import argparse
from pathlib import Path

import pandas as pd

parser = argparse.ArgumentParser()
parser.add_argument("--raw", required=True, help="the raw CSV (a uri_file input)")
parser.add_argument("--parts", type=int, default=4)
parser.add_argument("--out", required=True, help="the output folder (a uri_folder output)")
args = parser.parse_args()

rows = pd.read_csv(args.raw)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
size = -(-len(rows) // args.parts)  # ceiling division: every row in some part
for i in range(args.parts):
    rows.iloc[i * size:(i + 1) * size].to_csv(out / f"part-{i:03d}.csv", index=False)
print(f"wrote {args.parts} parts of {len(rows)} rows to {out}")
