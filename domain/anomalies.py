"""When a money request is unusual enough to flag (audit event + metric), never to refuse.

Pure policy: the callers supply the facts (amounts, counts kept in Redis).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

LARGE_TRANSFER = "large_transfer"
DAILY_VELOCITY = "daily_velocity"
FAILED_LOGIN_BURST = "failed_login_burst"

# "Daily" is a fixed 24-hour window opened by the user's first money request in it
# (the Redis counter's lifetime), not the UTC calendar day.
DAILY_VELOCITY_WINDOW_SECONDS = 24 * 3600


@dataclass(frozen=True, kw_only=True)
class Anomaly:
    """A flag to count, and to record in the audit trail as `anomaly.<kind>`."""

    kind: str
    actor_id: uuid.UUID | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def event_type(self) -> str:
        return f"anomaly.{self.kind}"


def is_large_transfer(amount: int, threshold: int | None) -> bool:
    return threshold is not None and amount >= threshold


def crosses_daily_velocity(requests_today: int, threshold: int) -> bool:
    """True exactly once a day: for the request that first goes past the threshold."""
    return requests_today == threshold + 1


def daily_velocity(*, user_id: uuid.UUID, requests_today: int, threshold: int) -> Anomaly | None:
    """The flag for a user's accepted money request, given the requests in the window so far."""
    if not crosses_daily_velocity(requests_today, threshold):
        return None
    return Anomaly(kind=DAILY_VELOCITY, actor_id=user_id, data={"threshold": threshold})
