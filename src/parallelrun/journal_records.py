"""What the journal takes and gives: the records of commits, failed items and counts.

Small value objects, importable from ``parallelrun.journal`` as well. The ones made once per mini-batch
(:class:`Success`) are not frozen: a frozen dataclass's ``__init__`` sets each field through
``object.__setattr__``, about five times the cost of a plain one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .data.batches import PieceId

if TYPE_CHECKING:
    from .outputs import PartRecord


@dataclass(frozen=True)
class FailedItem:
    """One input item that did not succeed."""

    item: str | None
    exc_type: str | None
    message: str
    traceback: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"item": self.item, "exc_type": self.exc_type, "message": self.message, "traceback": self.traceback}


@dataclass(slots=True)  # not frozen: one per mini-batch, and a frozen __init__ costs ~5x more
class Success:
    """One succeeded batch to commit: its accounting and the record of the part holding its rows."""

    idx: int
    attempts: int
    worker: str
    seconds: float
    succeeded: int
    n_failed: int
    failed_items: list[FailedItem]
    part: PartRecord | None  # None or length 0: the batch wrote no rows


@dataclass(frozen=True, slots=True)
class PieceResult:
    """How one piece of a batch being isolated ended: succeeded (with its part) or failed (each of its
    items a failed item)."""

    piece: PieceId
    attempt: int
    worker: str
    seconds: float
    succeeded: int
    failed_items: list[FailedItem]
    part: PartRecord | None = None


@dataclass(frozen=True)
class Counts:
    batches: int
    items: int
    batches_succeeded: int
    batches_failed: int
    batches_pending: int
    items_succeeded: int
    items_failed: int

    @property
    def items_done(self) -> int:
        return self.items_succeeded + self.items_failed

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)
