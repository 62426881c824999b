"""Transfer outcomes as events and webhook deliveries, in the engine's transaction; reading them.

One event row per interested user (the initiator and the owners of both accounts),
each carrying only the ledger entries that user may see. A delivery row is written
for every active endpoint of that user subscribed to the event type, due now: the
transactional outbox. Nothing is sent here: the unit of work queues the sends
after commit.

Order without a lock: each event row records the transaction that wrote it
(`xid`), and readers only see rows of transactions that can no longer commit,
ordered by `(xid, seq)`. So a cursor never skips an event that commits late, and
no writer has to hold a global lock until commit for that.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain.enums import EventType
from domain.errors import InvalidRequest
from domain.models import Event
from domain.repositories import events as events_repo
from domain.resources import EventResource, TransferEventData, TransferResource
from domain.services import reporting

EVENT_TYPES = tuple(EventType)
IMMEDIATE_SEND_LEASE_SECONDS = 30
BIGINT_MAX = 2**63 - 1


@dataclass(frozen=True)
class Finished:
    """A transfer that just reached a terminal state, with the entries it wrote."""

    transfer: Mapping[str, Any]
    entries: Sequence[Mapping[str, Any]]


@dataclass(frozen=True, order=True)
class EventCursor:
    """A position in one user's event stream: after the event (xid, seq)."""

    xid: int
    seq: int

    @classmethod
    def decode(cls, text: str) -> EventCursor:
        """Parses the cursors handed out before the gateway's opaque ones: `xid.seq`,
        and a bare `seq` (from before xids existed). Both stay valid forever."""
        xid, dot, seq = text.partition(".")
        parts = (xid, seq) if dot else ("1", xid)
        # isascii: str.isdigit() is also true of digits int() refuses, like "²".
        if not all(p.isascii() and p.isdigit() and 0 < len(p) <= 19 for p in parts):
            raise InvalidRequest("the cursor is not valid", code="invalid_cursor")
        position = cls(int(parts[0]), int(parts[1]))
        if max(position.xid, position.seq) > BIGINT_MAX:  # 19 digits can still overflow
            raise InvalidRequest("the cursor is not valid", code="invalid_cursor")
        return position


def outcome_events(
    finished: Sequence[Finished],
    *,
    owners: Mapping[uuid.UUID, uuid.UUID],
    sees_all: Collection[uuid.UUID],
    now: datetime,
) -> list[dict[str, Any]]:
    """Event rows for `finished`: one per interested user, with the legs they may see.

    `owners`: account id → owner; `sees_all`: users (operators, admins) who see
    every leg. The engine writes the rows, and their deliveries, in its transaction.
    """
    rows: list[dict[str, Any]] = []
    for f in finished:
        transfer = TransferResource.model_validate(f.transfer)
        event_type = EventType.for_outcome(transfer.status)
        entries = [(e, reporting.entry_resource(e, sees_all=True)) for e in f.entries]
        recipients = dict.fromkeys(
            [f.transfer["initiated_by"]]
            + [
                owners[a]
                for a in (transfer.source_account_id, transfer.destination_account_id)
                if a in owners
            ]
        )
        for user_id in recipients:
            visible = [
                reporting.entry_resource(raw, sees_all=False) if user_id not in sees_all else e
                for raw, e in entries
                if user_id in sees_all or owners.get(e.account_id) == user_id
            ]
            event = EventResource(
                id=f"evt_{uuid.uuid4().hex}",
                type=event_type,
                created_at=now,
                data=TransferEventData(transfer=transfer, entries=visible),
            )
            rows.append(
                {
                    "id": event.id,
                    "user_id": user_id,
                    "type": event.type.value,
                    "created_at": now,
                    "payload": event.model_dump(mode="json"),
                }
            )
    return rows


def delivery_due(now: datetime) -> datetime:
    """When the dispatcher may pick up a delivery whose immediate send got lost.

    The worker sends right after commit; this lease keeps the dispatcher off it
    meanwhile."""
    return now + timedelta(seconds=IMMEDIATE_SEND_LEASE_SECONDS)


def list_events(
    *, session: Session, user_id: uuid.UUID, after: EventCursor | None, limit: int
) -> list[Event]:
    return events_repo.for_user(session, user_id, after=after, limit=limit)


def cursor_of(event: Event) -> EventCursor:
    return EventCursor(event.xid, event.seq)


def render(event: Event) -> EventResource:
    return EventResource.model_validate(event.payload)
