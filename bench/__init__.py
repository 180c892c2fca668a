"""parallelrun's benchmark suite (issue 5): ``python -m bench`` or ``make bench``.

Generates its inputs deterministically (``data``), runs each workload with parallelrun and with its peers
in the same run (``peers``, ``workloads``), prints a table of medians and ratios, and writes JSON to
``bench/results/`` (``report``). See docs/performance.md for the latest numbers and how to read them.
"""
