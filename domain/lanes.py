"""Lanes: how pending transfers are grouped for the engine.

Every transfer is stored with a *slot*, one of `SLOTS`: the slot of its source
account (an atomic batch: of its first item's source), `transfers.lane` in the
database. PostgreSQL's `settle_lane(uuid)` (migration 0004) computes it from the
account id's low bits; `slot_of` computes the same in Python, and a test pins that.

A *lane* is what one drain works through: a fixed set of slots (`Lanes`). A worker
drains a whole lane at a time, so one wake-up message covers every account of the
lane, and under load a lane that is already being drained needs no new message.
Fewer lanes mean bigger batches and shorter queues; more lanes mean more drains
in parallel. By default there is one per transfer-worker process (`SETTLE_LANES`,
settle/config.py); the count travels in every message, so gateways and workers need
not agree on it (but wake-ups coalesce only among those that do).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

SLOTS = 16  # settle_lane() reads the id's last 16 bits; a power of two ≤ 65,536


def slot_of(account_id: uuid.UUID) -> int:
    return account_id.int % SLOTS


@dataclass(frozen=True)
class Lanes:
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or SLOTS % self.count:
            raise ValueError(f"the number of lanes must divide {SLOTS}")

    def of_slot(self, slot: int) -> int:
        return slot % self.count

    def slots(self, lane: int) -> list[int]:
        return list(range(lane, SLOTS, self.count))

    def of_account(self, account_id: uuid.UUID) -> int:
        """The lane that drains transfers from this account."""
        return self.of_slot(slot_of(account_id))
