"""Why a run stops with no worker left (``driver.no_worker_reason``): init() failing everywhere is the entry
script's failure; workers lost because their node left a Ray cluster are not, and the message says so,
what to do, and that ``resume`` carries on. A real cluster losing its only node during start-up is in
``tests/ray/test_ray_elastic.py``.
"""

from __future__ import annotations

from parallelrun.driver import no_worker_reason
from parallelrun.errors import UserCodeError

BOOM = UserCodeError("RuntimeError", "boom", "Traceback (most recent call last):\nRuntimeError: boom")
NODE_LEFT = ("worker node0.process000 could not start: its node died (ActorDiedError: The actor is dead because "
             "its node died)")


def test_init_failing_everywhere_names_the_first_error() -> None:
    text = no_worker_reason(False, [("node0.process000", BOOM)], [], "run-1")
    assert text.startswith("init() failed in every worker; the first error (node0.process000):")
    assert "RuntimeError: boom" in text and "node left" not in text


def test_every_worker_lost_during_start_up_says_the_nodes_left_and_what_to_do() -> None:
    text = no_worker_reason(False, [], [NODE_LEFT, NODE_LEFT.replace("process000", "process001")], "run-1")
    assert "init() failed" not in text and "the first error ()" not in text
    assert text.startswith("no worker is left: the workers were lost before any of them was ready")
    assert "their node left the Ray cluster" in text and "no node of the cluster can take their place" in text
    assert "(the last: worker node0.process001 could not start: its node died" in text
    assert "Add nodes that can host a worker" in text and "`parallelrun resume run-1`" in text


def test_workers_lost_mid_run_say_so_too() -> None:
    text = no_worker_reason(True, [], ["worker node0.process000 (pid 7) died while running mini-batch 3: "
                                       "ActorDiedError: its node died"], "run-2")
    assert text.startswith("no worker is left: the workers were lost because their node left")
    assert "`parallelrun resume run-2`" in text


def test_lost_and_init_failures_together_name_both() -> None:
    text = no_worker_reason(False, [("node1.process000", BOOM)], [NODE_LEFT], "run-3")
    assert "node left the Ray cluster" in text
    assert "init() also failed in 1 worker(s); the first error (node1.process000):" in text and "boom" in text
