"""Finding work that lost its wake-up message: accounts with stale pending transfers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from domain.repositories import transfers as transfers_repo


def accounts_needing_drain(*, session: Session, stale_after_seconds: float) -> list[uuid.UUID]:
    cutoff = datetime.now(UTC) - timedelta(seconds=stale_after_seconds)
    return transfers_repo.stale_pending_sources(session, older_than=cutoff)
