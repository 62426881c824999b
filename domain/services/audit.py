"""The append-only, keyed hash chain of audit events, sealed after commit.

Writers only insert rows (unsealed): no lock, so audit adds no serialisation
point to the money path. One sealer at a time (`seal`, run by workers after each
drain and by the periodic sweep) takes the rows whose transactions can no longer
commit, in `(xid, id)` order, and chains them: each row gets a seal (a row of
`audit_seals`, INSERT-only) with the next `chain_seq`, the previous hash, and an
HMAC-SHA256 over its own content and that previous hash, under a key that is not
in the database (SETTLE_AUDIT_KEY). Changing, removing or reordering any sealed row
breaks every hash after it, and without the key nobody can compute new ones;
`settle verify` recomputes the chain and names the first broken row, and checks it
against the signed checkpoints kept outside the database (domain/audit_anchor.py).

A row is only tamper-evident once sealed; the sealer runs within seconds, and
`settle verify` reports rows that stay unsealed for long.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from domain.context import current_request_id
from domain.repositories import audit as audit_repo

GENESIS_HASH = "0" * 64
SEAL_BATCH = 5000


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    event_type: str
    actor_id: uuid.UUID | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    # By default the request this code runs for (domain/context.py), so every audit
    # row written while serving a request names it.
    request_id: str | None = field(default_factory=current_request_id)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Origin:
    """Where a security-relevant request came from, stamped on each of its audit events."""

    client: str
    path: str | None = None
    request_id: str | None = None

    def record(
        self,
        event_type: str,
        *,
        actor_id: uuid.UUID | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> AuditRecord:
        return AuditRecord(
            event_type=event_type,
            actor_id=actor_id,
            subject_type=subject_type,
            subject_id=subject_id,
            request_id=self.request_id,
            data={"client": self.client, "path": self.path, **(data or {})},
        )


class SecurityMonitor(Protocol):
    """Where security events go when the caller's own transaction may roll back.

    A refused login must still leave its trace, so `record` writes at once, in a
    transaction of its own. Both calls are best effort: a failure to record is
    logged by the implementation, never raised, so it cannot turn a 401 into a 500.
    """

    def record(self, event: AuditRecord) -> None: ...

    def flag(self, kind: str) -> None:
        """Count an anomaly of this kind (anomalies are flagged, never refused)."""
        ...


@dataclass(frozen=True, kw_only=True)
class AuditKeys:
    """The chain's HMAC keys by id: new seals use `active`; verify accepts any of `keys`."""

    active: str
    keys: Mapping[str, bytes]

    def key(self, key_id: str) -> bytes | None:
        return self.keys.get(key_id)

    def mac(self, key_id: str, message: bytes) -> str:
        return hmac.new(self.keys[key_id], message, hashlib.sha256).hexdigest()


# The chain's canonical form is `json.dumps(<the dict below>, sort_keys=True,
# separators=(",", ":"), default=str)` (ensure_ascii on). `canonical` writes exactly
# those bytes without building the dict or a JSONEncoder per event: the top-level keys
# in their sorted order, each string through the C escaper json.dumps itself uses, and
# `data` through one shared sorted-keys encoder. tests/unit/test_audit_canonical.py
# holds it to json.dumps byte for byte, so chains sealed before stay valid.
_encode_data = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _json(value: object) -> str:
    """json.dumps(value) with the chain's options; strings (the usual case) fast."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _quote(value)
    return _encode_data(value)


def canonical(
    *,
    chain_seq: int,
    prev_hash: str,
    at: str,
    event_type: str,
    actor: str | None,
    subject_type: str | None,
    subject_id: str | None,
    request_id: str | None,
    data: Any,
) -> bytes:
    """The bytes a seal's HMAC covers (`at` is the ISO 8601 instant in UTC)."""
    return (
        f'{{"actor":{_json(actor)},"at":{_json(at)},"data":{_encode_data(data)},'
        f'"prev":{_json(prev_hash)},"request":{_json(request_id)},"seq":{_json(chain_seq)},'
        f'"subject":[{_json(subject_type)},{_json(subject_id)}],"type":{_json(event_type)}}}'
    ).encode()


def event_hash(event: audit_repo.Sealable, *, chain_seq: int, prev_hash: str, key: bytes) -> str:
    message = canonical(
        chain_seq=chain_seq,
        prev_hash=prev_hash,
        at=event.occurred_at.astimezone(UTC).isoformat(),
        event_type=event.event_type,
        actor=str(event.actor_id) if event.actor_id else None,
        subject_type=event.subject_type,
        subject_id=event.subject_id,
        request_id=event.request_id,
        data=event.data,
    )
    return hmac.digest(key, message, "sha256").hex()


def record(session: Session, event_type: str, **fields: Any) -> None:
    """Append one event; `fields` are those of AuditRecord."""
    append(session, [AuditRecord(event_type=event_type, **fields)])


def append(session: Session, records: Sequence[AuditRecord]) -> None:
    if records:
        audit_repo.insert_unsealed(session, rows(records))


def rows(records: Sequence[AuditRecord], now: datetime | None = None) -> list[dict[str, Any]]:
    """Unsealed rows for `records` (the engine writes them in its batch statement)."""
    now = now or datetime.now(UTC)
    return [
        {
            "occurred_at": now,
            "event_type": r.event_type,
            "actor_id": r.actor_id,
            "subject_type": r.subject_type,
            "subject_id": r.subject_id,
            "request_id": r.request_id,
            # JSON-safe now (uuids as strings), so the hash later covers what JSONB holds.
            "data": json.loads(json.dumps(r.data, default=str)),
        }
        for r in records
    ]


def seal(session: Session, *, keys: AuditKeys, limit: int = SEAL_BATCH) -> int:
    """Chains up to `limit` final unsealed rows; 0 if another sealer is at work."""
    head = audit_repo.claim_head(session)
    if head is None:
        return 0
    last_seq, last_hash = head
    rows = audit_repo.unsealed_final(session, limit=limit)
    key = keys.keys[keys.active]
    seals = []
    for row in rows:
        last_seq += 1
        digest = event_hash(row, chain_seq=last_seq, prev_hash=last_hash, key=key)
        seals.append(audit_repo.Seal(row.id, last_seq, last_hash, digest, keys.active))
        last_hash = digest
    audit_repo.write_seals(session, seals, head=(last_seq, last_hash))
    return len(seals)
