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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain.enums import EventType
from domain.errors import InvalidRequest
from domain.models import Event
from domain.repositories import events as events_repo
from domain.repositories import users as users_repo
from domain.repositories import webhooks as webhooks_repo
from domain.resources import EntryResource, EventResource, TransferEventData, TransferResource

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


def publish_outcomes(
    session: Session,
    finished: Sequence[Finished],
    *,
    owners: Mapping[uuid.UUID, uuid.UUID],
    now: datetime,
) -> list[uuid.UUID]:
    """Writes events and due deliveries for `finished`; returns the delivery ids."""
    if not finished:
        return []
    recipients_of = {
        f.transfer["id"]: list(
            dict.fromkeys(
                [f.transfer["initiated_by"]]
                + [
                    owners[a]
                    for a in (f.transfer["source_account_id"], f.transfer["destination_account_id"])
                    if a in owners
                ]
            )
        )
        for f in finished
    }
    everyone = {user for users in recipients_of.values() for user in users}
    sees_all = {
        user
        for user, role in users_repo.roles_of(session, everyone).items()
        if role.sees_everything
    }
    rows: list[dict[str, Any]] = []
    for f in finished:
        transfer = TransferResource.model_validate(f.transfer)
        event_type = EventType.for_outcome(transfer.status)
        entries = [EntryResource.model_validate(e) for e in f.entries]
        for user_id in recipients_of[f.transfer["id"]]:
            visible = [
                e for e in entries if user_id in sees_all or owners.get(e.account_id) == user_id
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
    written = events_repo.insert_many(session, rows)
    return _deliveries_for(session, written, now)


def _deliveries_for(
    session: Session, written: Sequence[events_repo.Written], now: datetime
) -> list[uuid.UUID]:
    endpoints = webhooks_repo.active_endpoints_for(session, list({e.user_id for e in written}))
    if not endpoints:
        return []
    # The worker sends right after commit; the dispatcher only picks a delivery up
    # if that send did not happen (lost message) once this lease runs out.
    due = now + timedelta(seconds=IMMEDIATE_SEND_LEASE_SECONDS)
    deliveries = [
        {"id": uuid.uuid4(), "endpoint_id": endpoint.id, "event_seq": event.seq, "due": due}
        for event in written
        for endpoint in endpoints
        if endpoint.user_id == event.user_id and event.type in endpoint.events
    ]
    webhooks_repo.insert_deliveries(session, deliveries)
    return [uuid.UUID(str(d["id"])) for d in deliveries]


def list_events(
    *, session: Session, user_id: uuid.UUID, after: EventCursor | None, limit: int
) -> list[Event]:
    return events_repo.for_user(session, user_id, after=after, limit=limit)


def cursor_of(event: Event) -> EventCursor:
    return EventCursor(event.xid, event.seq)


def render(event: Event) -> EventResource:
    return EventResource.model_validate(event.payload)
