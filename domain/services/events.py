"""Transfer outcomes as events and webhook deliveries, in the engine's transaction; reading them.

One event row per interested user (the initiator and the owners of both accounts),
each carrying only the ledger entries that user may see; after them, the
`balance.below`/`balance.above` events that the transfer's entries fired, for each
alert's creator (domain/services/alerts.py). A delivery row is written
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
from domain.resources import (
    BalanceEvent,
    BalanceEventData,
    BatchEvent,
    EventResource,
    HoldEvent,
    TransferEvent,
    TransferEventData,
    TransferResource,
)
from domain.services import reporting
from domain.services.alerts import Crossing

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
    crossings: Sequence[Crossing] = (),
) -> list[dict[str, Any]]:
    """Event rows for `finished`: one per interested user, with the legs they may see.

    `owners`: account id → owner; `sees_all`: users (operators, admins) who see
    every leg. The engine writes the rows, and their deliveries, in its transaction.
    The balance alerts a transfer's entries fired (`crossings`) follow its own
    events, so a stream shows the transfer, then the alert it caused.
    """
    caused: dict[uuid.UUID, list[Crossing]] = {}
    for crossing in crossings:
        caused.setdefault(crossing.entry["transfer_id"], []).append(crossing)
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
            # Holds moving (held, captured, voided, expired) are told as hold events.
            model = HoldEvent if event_type.value.startswith("hold.") else TransferEvent
            event = model(
                id=new_event_id(),
                type=event_type,
                created_at=now,
                data=TransferEventData(transfer=transfer, entries=visible),
            )
            rows.append(event_row(event, user_id, now))
        rows += [balance_event_row(c, now) for c in caused.get(transfer.id, ())]
    return rows


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def event_row(
    event: TransferEvent | HoldEvent | BalanceEvent | BatchEvent, user_id: uuid.UUID, now: datetime
) -> dict[str, Any]:
    """The `events` row of `event` in `user_id`'s stream."""
    return {
        "id": event.id,
        "user_id": user_id,
        "type": event.type.value,
        "created_at": now,
        "payload": event.model_dump(mode="json"),
    }


def balance_event_row(crossing: Crossing, now: datetime) -> dict[str, Any]:
    """The `balance.below`/`balance.above` event of one crossing, for the alert's creator."""
    entry = crossing.entry
    event = BalanceEvent(
        id=new_event_id(),
        type=crossing.type,
        created_at=now,
        data=BalanceEventData(
            alert_id=crossing.alert.id,
            account_id=entry["account_id"],
            currency=entry["currency"],
            threshold=crossing.threshold,
            rearm_margin=crossing.alert.rearm_margin,
            balance_before=entry["balance_before"],
            balance=entry["balance_after"],
            transfer_id=entry["transfer_id"],
            sequence=entry["sequence"],
        ),
    )
    return event_row(event, crossing.alert.created_by, now)


def delivery_due(now: datetime) -> datetime:
    """When the dispatcher may pick up a delivery whose immediate send got lost.

    The worker sends right after commit; this lease keeps the dispatcher off it
    meanwhile."""
    return now + timedelta(seconds=IMMEDIATE_SEND_LEASE_SECONDS)


def parse_types(given: str | None) -> list[str] | None:
    """`types=a,b` of GET /v1/events: known event types, or None for every type."""
    names = [name.strip() for name in (given or "").split(",") if name.strip()]
    unknown = sorted(set(names) - set(EVENT_TYPES))
    if unknown:
        raise InvalidRequest(
            f"unknown event type(s) {', '.join(unknown)}; `types` is a comma-separated list "
            f"of {', '.join(EVENT_TYPES)}",
            code="invalid_event_types",
        )
    return list(dict.fromkeys(names)) or None


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    # Where the next read starts; None when nothing new became visible since `after`.
    next: EventCursor | None
    # Transactions below `visible_below` were all final for this read (so their events
    # were all seen); every transaction committed before it is below `committed_below`.
    visible_below: int
    committed_below: int


def list_events(
    *,
    session: Session,
    user_id: uuid.UUID,
    after: EventCursor | None,
    limit: int,
    types: Sequence[str] | None = None,
) -> EventPage:
    """The user's events after `after`, in commit-safe order, only of `types` if given.

    A filtered page that is not full has looked at every visible event: its cursor
    moves past the other types too, so the next read does not scan them again."""
    bound, horizon = events_repo.snapshot_bounds(session)
    rows = events_repo.for_user(
        session, user_id, after=after, limit=limit, bound=bound, types=types
    )
    last = cursor_of(rows[-1]) if rows else None
    if types and len(rows) < limit:
        tail = events_repo.last_position(session, user_id, bound=bound)
        if tail is not None and (last is None or EventCursor(*tail) > last):
            last = EventCursor(*tail)
    if last is not None and after is not None and last <= after:
        last = None
    return EventPage(events=rows, next=last, visible_below=bound, committed_below=horizon)


def cursor_of(event: Event) -> EventCursor:
    return EventCursor(event.xid, event.seq)


def render(event: Event) -> EventResource:
    return EventResource.model_validate(event.payload)
