"""README's job spec example is a valid job spec (docs must not drift from the code)."""

import re
from pathlib import Path

import yaml

from parallelrun.config import validate_spec


def test_readme_job_spec_validates() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```yaml\n(name: .*?)```", readme, re.S)
    assert block, "README lost its job spec example"
    spec = validate_spec(yaml.safe_load(block.group(1)))
    assert spec.name == "digits" and spec.mini_batch_size == 5
