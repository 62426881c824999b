"""Canceling a pending transfer: by its initiator or an operator, racing the engine safely.

A transfer is canceled or applied, never both: the cancel is one conditional UPDATE
(`pending` -> `canceled`) against the same row the engine locks while it applies it
(see domain/repositories/transfers.py). The `transfer.canceled` event, its webhook
deliveries, the completion NOTIFY and the audit row are written in the same unit of
work, as the engine writes them for its outcomes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from domain.enums import TransferStatus
from domain.errors import Conflict, PermissionDenied
from domain.models import Transfer, User
from domain.repositories import accounts as accounts_repo
from domain.repositories import engine as engine_repo
from domain.repositories import transfers as transfers_repo
from domain.resources import TransferResource
from domain.services import audit, batch_completion, events
from domain.services.transfers import get_visible_transfer
from domain.uow import UnitOfWork


def cancel(
    *, uow: UnitOfWork, user: User, transfer_id: uuid.UUID, request_id: str | None = None
) -> Transfer:
    """The canceled transfer. Canceling one that is already canceled answers it again."""
    session = uow.session
    transfer = get_visible_transfer(session=session, user=user, transfer_id=transfer_id)
    if not (user.role.sees_everything or transfer.initiated_by == user.id):
        raise PermissionDenied(
            "only the transfer's initiator or an operator may cancel it", code="cancel_forbidden"
        )
    if transfer.batch_id is not None and transfers_repo.is_atomic_batch(session, transfer.batch_id):
        raise Conflict(
            "this transfer belongs to an atomic batch, which is applied whole; it cannot be "
            "canceled on its own",
            code="atomic_batch_item",
        )
    canceled = transfers_repo.cancel_if_pending(session, transfer_id)
    if canceled is None:
        session.refresh(transfer)
        if transfer.status == TransferStatus.CANCELED:
            return transfer
        raise Conflict(
            f"the transfer is already {transfer.status}; only a pending transfer can be "
            "canceled (reverse a succeeded one, void a held hold)",
            code="transfer_not_pending",
        )
    _publish(uow, canceled, actor=user, request_id=request_id)
    return canceled


def _publish(uow: UnitOfWork, transfer: Transfer, *, actor: User, request_id: str | None) -> None:
    session = uow.session
    now = datetime.now(UTC)
    owners, sees_all = _interested(session, transfer)
    if actor.role.sees_everything:
        sees_all.add(actor.id)
    rows = events.outcome_events(
        [
            events.Finished(
                transfer=TransferResource.model_validate(transfer).model_dump(mode="python")
                | {"initiated_by": transfer.initiated_by},
                entries=[],
            )
        ],
        owners=owners,
        sees_all=sees_all,
        now=now,
    )
    if transfer.batch_id is not None:
        rows += batch_completion.finished(session, [transfer.batch_id], now)
    uow.send_deliveries(
        engine_repo.publish(
            session, events=rows, due=events.delivery_due(now), finished_ids=[transfer.id]
        )
    )
    audit.record(
        session,
        "transfer.canceled",
        actor_id=actor.id,
        subject_type="transfer",
        subject_id=str(transfer.id),
        request_id=request_id,
        data={
            "kind": transfer.kind.value,
            "amount": transfer.amount,
            "currency": transfer.currency,
        },
    )


def _interested(
    session: Session, transfer: Transfer
) -> tuple[dict[uuid.UUID, uuid.UUID], set[uuid.UUID]]:
    owners: dict[uuid.UUID, uuid.UUID] = {}
    sees_all: set[uuid.UUID] = set()
    for account_id in (transfer.source_account_id, transfer.destination_account_id):
        account = accounts_repo.get(session, account_id)
        if account is not None and account.owner_id is not None:
            owners[account.id] = account.owner_id
    return owners, sees_all
