"""Turning transfer outcomes into events and webhook deliveries, in the engine's transaction.

One event row per interested user (the initiator and the owners of both accounts),
each carrying only the ledger entries that user may see. A delivery row is created
for every active endpoint of that user subscribed to the event type, due now: the
transactional outbox. Nothing is sent here; `workers/` does that after commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain.models import Event, LedgerEntry, Transfer, WebhookDelivery
from domain.repositories import events as events_repo
from domain.repositories import users as users_repo
from domain.repositories import webhooks as webhooks_repo
from domain.services.transfers import transfer_snapshot

EVENT_TYPES = ("transfer.succeeded", "transfer.failed")
IMMEDIATE_SEND_LEASE_SECONDS = 30


def entry_snapshot(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "transfer_id": str(entry.transfer_id),
        "account_id": str(entry.account_id),
        "amount": entry.amount,
        "currency": entry.currency,
        "balance_before": entry.balance_before,
        "balance_after": entry.balance_after,
        "sequence": entry.sequence,
        "created_at": entry.created_at.isoformat(),
    }


def publish_outcomes(
    session: Session,
    transfers: Iterable[Transfer],
    entries: Iterable[LedgerEntry],
    *,
    now: datetime,
) -> list[uuid.UUID]:
    """Write events and due deliveries for terminal `transfers`; returns delivery ids."""
    transfers = list(transfers)
    if not transfers:
        return []
    legs: dict[uuid.UUID, list[LedgerEntry]] = {}
    for entry in entries:
        legs.setdefault(entry.transfer_id, []).append(entry)
    owners = events_repo.owners_of(
        session,
        {t.source_account_id for t in transfers} | {t.destination_account_id for t in transfers},
    )
    sees_all: dict[uuid.UUID, bool] = {}
    events: list[Event] = []
    for transfer in transfers:
        recipients = dict.fromkeys(
            [transfer.initiated_by]
            + [
                owners[a]
                for a in (transfer.source_account_id, transfer.destination_account_id)
                if a in owners
            ]
        )
        for user_id in recipients:
            if user_id not in sees_all:
                user = users_repo.get(session, user_id)
                sees_all[user_id] = user is not None and user.role in ("operator", "admin")
            visible = [
                entry_snapshot(e)
                for e in legs.get(transfer.id, [])
                if sees_all[user_id] or owners.get(e.account_id) == user_id
            ]
            event_id = f"evt_{uuid.uuid4().hex}"
            event_type = f"transfer.{transfer.status}"
            events.append(
                Event(
                    id=event_id,
                    user_id=user_id,
                    type=event_type,
                    created_at=now,
                    payload={
                        "id": event_id,
                        "type": event_type,
                        "created_at": now.isoformat(),
                        "data": {"transfer": transfer_snapshot(transfer), "entries": visible},
                    },
                )
            )
    events_repo.add_all(session, events)
    return _deliveries_for(session, events, now)


def _deliveries_for(session: Session, events: list[Event], now: datetime) -> list[uuid.UUID]:
    endpoints = webhooks_repo.active_endpoints_for(session, list({e.user_id for e in events}))
    deliveries = [
        # The worker sends right after commit; the dispatcher only picks a delivery up
        # if that send did not happen (lost message) once this lease runs out.
        WebhookDelivery(
            id=uuid.uuid4(),
            endpoint_id=endpoint.id,
            event_seq=event.seq,
            status="pending",
            attempts=0,
            next_attempt_at=now + timedelta(seconds=IMMEDIATE_SEND_LEASE_SECONDS),
        )
        for event in events
        for endpoint in endpoints
        if endpoint.user_id == event.user_id and event.type in endpoint.events
    ]
    if deliveries:
        webhooks_repo.add_deliveries(session, deliveries)
    return [d.id for d in deliveries]


def list_events(*, session: Session, user_id: uuid.UUID, after_seq: int, limit: int) -> list[Event]:
    return events_repo.for_user(session, user_id, after_seq=after_seq, limit=limit)
