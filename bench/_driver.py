"""Run the ``parallelrun`` command line and record this process's peak RSS (the driver's alone, not its
workers'): ``python -m bench._driver OUT.json run job.yml ...``. Used by W4-W7."""

from __future__ import annotations

import atexit
import json
import resource
import sys


def _peak_kb() -> int:
    # VmHWM belongs to this program's own address space. ru_maxrss is no good here: Linux carries the
    # parent's peak over fork and exec, so a driver started from a big benchmark process would inherit it.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux


def _record(path: str) -> None:
    with open(path, "w") as f:
        json.dump({"maxrss_mb": _peak_kb() / 1024}, f)


if __name__ == "__main__":
    out = sys.argv[1]
    atexit.register(_record, out)
    sys.argv = ["parallelrun", *sys.argv[2:]]
    from parallelrun.cli import console

    console()  # as the installed ``parallelrun`` script runs it
