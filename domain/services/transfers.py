"""Reading transfers and batches as the caller may see them; forgetting old idempotency keys.

Acceptance lives in `domain/services/acceptance.py`, execution in `engine.py`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from domain.enums import TransferStatus
from domain.errors import NotFound
from domain.models import Transfer, TransferBatch, User
from domain.repositories import accounts as accounts_repo
from domain.repositories import idempotency as idempotency_repo
from domain.repositories import transfers as transfers_repo
from domain.repositories.transfers import TransferFilters
from domain.rules import INTERNAL_ERROR

__all__ = ["TransferFilters"]  # the listing's filters, for the gateway


def purge_idempotency_keys(*, session: Session, retention_seconds: float) -> int:
    """Forget keys older than the retention window (at least 24 h by default)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=retention_seconds)
    return idempotency_repo.purge_older_than(session, cutoff)


def _may_see(session: Session, user: User, transfer: Transfer) -> bool:
    if user.role.sees_everything or transfer.initiated_by == user.id:
        return True
    for account_id in (transfer.source_account_id, transfer.destination_account_id):
        account = accounts_repo.get(session, account_id)
        if account is not None and account.owner_id == user.id:
            return True
    return False


def get_visible_transfer(*, session: Session, user: User, transfer_id: uuid.UUID) -> Transfer:
    transfer = transfers_repo.get(session, transfer_id)
    if transfer is None or not _may_see(session, user, transfer):
        raise NotFound("transfer not found")
    return transfer


def list_visible_transfers(
    *,
    session: Session,
    user: User,
    filters: TransferFilters,
    before_seq: int | None,
    limit: int,
) -> list[Transfer]:
    query = (
        transfers_repo.all_transfers()
        if user.role.sees_everything
        else transfers_repo.visible_to(user.id)
    )
    return transfers_repo.page(session, query, filters=filters, before_seq=before_seq, limit=limit)


def count_quarantined(*, session: Session) -> int:
    """Transfers the engine gave up on (see workers/tasks.py, quarantine)."""
    return transfers_repo.count_failed_with(session, INTERNAL_ERROR)


@dataclass(frozen=True)
class BatchView:
    batch: TransferBatch
    transfers: list[Transfer]

    @property
    def done(self) -> bool:
        return all(t.status != TransferStatus.PENDING for t in self.transfers)


def get_visible_batch(*, session: Session, user: User, batch_id: uuid.UUID) -> BatchView:
    """A batch is visible to the user who submitted it, and to operators."""
    batch = transfers_repo.get_batch(session, batch_id)
    if batch is None or not (user.role.sees_everything or batch.initiated_by == user.id):
        raise NotFound("transfer batch not found")
    return BatchView(batch=batch, transfers=transfers_repo.of_batch(session, batch_id))
