"""Finding work that lost its wake-up: lanes with stale pending transfers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from domain.repositories import transfers as transfers_repo


def lanes_needing_drain(*, session: Session, stale_after_seconds: float) -> list[int]:
    cutoff = datetime.now(UTC) - timedelta(seconds=stale_after_seconds)
    return transfers_repo.stale_pending_lanes(session, older_than=cutoff)


def lane_has_pending(*, session: Session, lane: int) -> bool:
    return transfers_repo.lane_has_pending(session, lane)
