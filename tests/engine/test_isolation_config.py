"""The isolate_failures job spec key."""

from __future__ import annotations

import pytest

from parallelrun.config import validate_spec
from parallelrun.errors import JobSpecError

BASE = {"name": "digits", "entry_script": "score.py", "inputs": [{"type": "file", "path": "data"}]}


def test_isolation_is_on_by_default_and_can_be_turned_off() -> None:
    assert validate_spec(BASE).isolate_failures is True
    off = validate_spec({**BASE, "isolate_failures": False})
    assert off.isolate_failures is False
    # It changes which items fail, not what a succeeded item's row is: a resume may change it.
    assert off.fingerprint() == validate_spec(BASE).fingerprint()


def test_a_bad_value_names_the_field_and_an_example() -> None:
    with pytest.raises(JobSpecError) as e:
        validate_spec({**BASE, "isolate_failures": "sometimes"})
    assert "isolate_failures: 'sometimes' is invalid" in str(e.value)
    assert "Example: isolate_failures: false" in str(e.value)
