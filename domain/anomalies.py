"""When a money request is unusual enough to flag (audit event + metric), never to refuse.

Pure policy: the callers supply the facts (amounts, counts kept in Redis).
"""

from __future__ import annotations

LARGE_TRANSFER = "large_transfer"
DAILY_VELOCITY = "daily_velocity"
FAILED_LOGIN_BURST = "failed_login_burst"


def is_large_transfer(amount: int, threshold: int | None) -> bool:
    return threshold is not None and amount >= threshold


def crosses_daily_velocity(requests_today: int, threshold: int) -> bool:
    """True exactly once a day: for the request that first goes past the threshold."""
    return requests_today == threshold + 1
