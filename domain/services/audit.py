"""The append-only, hash-chained audit trail.

Each event's hash covers its own content and the previous event's hash, so
changing, removing or reordering any row breaks every hash after it;
`settle verify` recomputes the chain and names the first broken row. Appends
serialise on the single chain-head row; callers append last in their
transaction so that lock is held only until commit.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from domain.models import AuditEvent
from domain.repositories import audit as audit_repo

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    event_type: str
    actor_id: uuid.UUID | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    request_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def event_hash(event: AuditEvent) -> str:
    canonical = json.dumps(
        {
            "seq": event.chain_seq,
            "prev": event.prev_hash,
            "at": event.occurred_at.astimezone(UTC).isoformat(),
            "type": event.event_type,
            "actor": str(event.actor_id) if event.actor_id else None,
            "subject": [event.subject_type, event.subject_id],
            "request": event.request_id,
            "data": event.data,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def record(session: Session, event_type: str, **fields: Any) -> AuditEvent:
    """Append one event; `fields` are those of AuditRecord."""
    return append(session, [AuditRecord(event_type=event_type, **fields)])[0]


def append(session: Session, records: Sequence[AuditRecord]) -> list[AuditEvent]:
    if not records:
        return []
    head = audit_repo.lock_head(session)
    # Round-trip through JSON now so the hashed data equals what JSONB gives back.
    now = datetime.now(UTC)
    events = []
    for record in records:
        event = AuditEvent(
            chain_seq=head.last_seq + 1,
            occurred_at=now,
            event_type=record.event_type,
            actor_id=record.actor_id,
            subject_type=record.subject_type,
            subject_id=record.subject_id,
            request_id=record.request_id,
            data=json.loads(json.dumps(record.data, default=str)),
            prev_hash=head.last_hash,
        )
        event.hash = event_hash(event)
        head.last_seq, head.last_hash = event.chain_seq, event.hash
        events.append(event)
    audit_repo.add_all(session, events)
    session.flush()
    return events
