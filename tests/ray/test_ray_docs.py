"""docs/ray.md stays true: its job spec is valid, and the missing-extra error names the pip command."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from parallelrun import MissingExtraError
from parallelrun.config import validate_spec

pytestmark = pytest.mark.ray

DOC = Path(__file__).resolve().parents[2] / "docs" / "ray.md"


def test_the_documented_job_spec_is_valid() -> None:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/ray.md has no yaml block"
    spec = validate_spec(yaml.safe_load(block.group(1)))
    assert (spec.compute, spec.node_count, spec.process_count_per_node) == ("ray://10.0.0.5:10001", 2, 2)


@pytest.mark.parametrize(("form", "example"), [("ray", "ray"), ("auto", "auto"), ("host:port", "10.0.0.5:6379"),
                                             ("ray://host:port", "ray://10.0.0.5:10001")])
def test_every_compute_form_in_the_table_is_accepted(form: str, example: str) -> None:
    assert re.search(rf"^\| `{re.escape(form)}` +\|", DOC.read_text(), re.M), f"the table lacks {form}"
    spec = validate_spec({"name": "digits", "entry_script": "s.py", "inputs": [{"type": "file", "path": "d"}],
                          "compute": example, "node_count": 2})
    assert spec.compute == example


def test_without_ray_the_error_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from parallelrun.execution.ray_executor import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    spec = validate_spec({"name": "digits", "entry_script": "s.py", "inputs": [{"type": "file", "path": "d"}],
                          "compute": "ray"})
    with pytest.raises(MissingExtraError, match=r"pip install 'parallelrun\[ray\]'"):
        RayExecutor(None, spec)  # type: ignore[arg-type]
