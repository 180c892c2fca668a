"""Issue 13.1 end to end: a result that breaks "one element per input" fails its attempt; nothing of it is
written, and the output holds each good item's row exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = '''
import os

def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if "f003.txt" in names:
        return names + names             # twice as many elements as inputs
    if "f006.txt" in names:
        return [names[0], names[0]]      # one input named twice, the other missing
    return names
'''


@pytest.mark.timeout(180)
def test_a_result_with_too_many_elements_or_an_input_twice_is_a_failed_attempt(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(8):
        (data / f"f{i:03d}.txt").write_text(str(i))
    (tmp_path / "score.py").write_text(SCRIPT)
    (tmp_path / "job.yml").write_text(yaml.safe_dump({
        "name": "contract", "entry_script": "score.py", "inputs": [{"type": "file", "path": "data"}],
        "output": "out", "mini_batch_size": 2, "process_count_per_node": 1, "run_max_try": 1,
        "isolate_failures": False}))
    done = subprocess.run([sys.executable, "-m", "parallelrun", "run", "job.yml", "--workspace", "ws", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr  # failed items are allowed by default (error_threshold: -1)
    rows = (tmp_path / "out" / "parallel_run_step.txt").read_text().splitlines()
    assert rows == ["f000.txt", "f001.txt", "f004.txt", "f005.txt"]  # the bad batches wrote nothing
    (run_dir,) = (tmp_path / "ws" / "runs").iterdir()
    failed = [json.loads(line) for line in (run_dir / "logs" / "user" / "error" / "failed_items.jsonl").open()]
    by_input = {Path(f["input"]).name: f["message"] for f in failed}
    assert sorted(by_input) == ["f002.txt", "f003.txt", "f006.txt", "f007.txt"]
    assert "returned 4 elements for a mini-batch of 2 input(s)" in by_input["f003.txt"]
    assert "names the input(s) 'f006.txt' more than once" in by_input["f007.txt"]
