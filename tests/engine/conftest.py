"""Fixtures for engine tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_helpers import JobFolder, make_job


@pytest.fixture
def job_factory(tmp_path: Path):
    def factory(script: str, **spec: Any) -> JobFolder:
        return make_job(tmp_path, script, **spec)

    return factory
