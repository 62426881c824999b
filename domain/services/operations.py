"""What an operator's dashboard asks of the database: backlog, its age, webhooks, verify.

One short read per scrape (`/metrics` reads it; see settle/metrics.py). Queue depths
live in the broker, so the caller adds them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from domain.repositories import transfers as transfers_repo
from domain.repositories import verification as verification_repo
from domain.repositories import webhooks as webhooks_repo
from domain.rules import INTERNAL_ERROR


def snapshot(*, session: Session, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    pending, oldest = transfers_repo.pending_backlog(session)
    latest = verification_repo.latest(session)
    return {
        "pending": pending,
        "oldest_pending_age": max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        "webhooks_pending": webhooks_repo.count_pending(session),
        "quarantined": transfers_repo.count_failed_with(session, INTERNAL_ERROR),
        "verify": None
        if latest is None
        else {
            "ok": latest.ok,
            "problems": latest.problems,
            "ran_at": latest.ran_at.timestamp(),
        },
    }
