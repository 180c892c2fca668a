"""Commands read from the documentation, for the tests that run them (and the Azurite fixture)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def documented_azurite_command(doc: Path = REPO / "docs" / "tutorial.md") -> list[str]:
    """The Azurite command line of docs/tutorial.md's "Before you start" block, as argv.

    The fixture starts Azurite with exactly these flags (only ``--blobPort`` and ``--location`` are
    replaced: a free port, a temporary folder), so the docs' command is what the tests run.
    """
    text = doc.read_text(encoding="utf-8")
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            if "azurite-blob " in line:
                argv = shlex.split(line.split(" #", 1)[0])
                return [a for a in argv if a != "&"]
    raise AssertionError(f"{doc} has no azurite-blob command in a bash block")


def install_azurite_command(doc: Path = REPO / "docs" / "tutorial.md") -> list[str]:
    """The documented ``npm install ... azurite`` line, as argv."""
    for line in doc.read_text(encoding="utf-8").splitlines():
        if re.match(r"^npm install .*azurite", line):
            return shlex.split(line.split(" #", 1)[0])
    raise AssertionError(f"{doc} has no npm install line for azurite")
