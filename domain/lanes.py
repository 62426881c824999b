"""Lanes: how pending transfers are grouped for the engine.

Every transfer belongs to one of `LANES` lanes, the lane of its source account
(an atomic batch: the lane of its first item's source). A worker drains a whole
lane at a time, so one wake-up message covers every account in it, and under
load a lane that is already being drained needs no new message at all.

The lane is the low bits of the account id (uuid4, so random); PostgreSQL's
`settle_lane(uuid)` (migration 0004) computes the same, and a test pins that.
"""

from __future__ import annotations

import uuid

LANES = 16  # a power of two ≤ 65,536: settle_lane() reads the id's last 16 bits


def lane_of(account_id: uuid.UUID) -> int:
    return account_id.int % LANES
