"""Finding work that lost its wake-up (lane slots with stale or newly due pending
transfers), and expiring holds whose time has passed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from domain.repositories import engine as engine_repo
from domain.repositories import transfers as transfers_repo
from domain.services import engine
from domain.uow import UnitOfWork


def slots_needing_drain(*, session: Session, stale_after_seconds: float) -> list[int]:
    """Slots whose oldest pending transfer is older than the threshold (their lanes
    lost their wake-up, or it is still on its way)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=stale_after_seconds)
    return transfers_repo.stale_pending_slots(session, older_than=cutoff)


def has_pending(*, session: Session, slots: Sequence[int]) -> bool:
    return engine_repo.has_due_pending(session, slots)


def expire_holds(*, uow: UnitOfWork, limit: int = 500) -> int:
    """Expire up to `limit` held holds past their time, under the engine's locks."""
    return len(engine.expire_due_holds(uow=uow, limit=limit))
