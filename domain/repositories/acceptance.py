"""Recording money requests: one call of `settle_accept` (migrations 0004, 0009, 0010).

The function claims the Idempotency-Key, replays or refuses a reused key,
resolves and checks every account, and writes the transfers, the key and the
audit rows, all in one statement: one round trip, its own transaction, durable
when it returns. This module speaks to it through an asyncpg-style connection,
or (`accept_in_session`) inside the transaction of a SQLAlchemy session.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session


class Connection(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


@dataclass(frozen=True)
class Row:
    outcome: str
    item: int | None  # 1-based index of a refused item, or the batch index of a transfer
    detail: str | None
    transfer: dict[str, Any] | None


_ACCEPT = (
    "SELECT outcome, item, detail, transfer::text FROM settle_accept("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
)


@dataclass(frozen=True, kw_only=True)
class AcceptCall:
    """The arguments of `settle_accept`, one list entry per item."""

    user_id: uuid.UUID
    key: str
    fingerprint: str
    kinds: Sequence[str]
    accounts: Sequence[uuid.UUID | None]
    destinations: Sequence[str | None]
    amounts: Sequence[int | None]  # None: a reversal's remainder, a capture's whole hold
    currencies: Sequence[str | None]  # None for commands: taken from the transfer they name
    descriptions: Sequence[str | None]
    batch_id: uuid.UUID | None
    atomic: bool
    request_id: str | None
    large_threshold: int | None
    # Migration 0009. Each list is None when no item uses it (the usual case), so a
    # plain transfer sends nothing more than before.
    targets: Sequence[uuid.UUID | None] | None = None
    execute_at: Sequence[datetime | None] | None = None
    execute_before: Sequence[datetime | None] | None = None
    expires_in: Sequence[int | None] | None = None
    max_pending: int | None = None
    # JSON text: an array with one metadata object per item, or None when no item has
    # any (the common case: nothing to encode, send or parse).
    metadata: str | None = None
    batch_metadata: str | None = None  # JSON text of the batch's own object, or None


def _rows(records: Sequence[Any]) -> list[Row]:
    return [
        Row(
            outcome=r[0],
            item=r[1],
            detail=r[2],
            transfer=json.loads(r[3]) if r[3] is not None else None,
        )
        for r in records
    ]


async def accept(conn: Connection, call: AcceptCall) -> list[Row]:
    """The hot path: asyncpg, one prepared statement, autocommit."""
    return _rows(
        await conn.fetch(
            _ACCEPT,
            call.user_id,
            call.key,
            call.fingerprint,
            list(call.kinds),
            list(call.accounts),
            list(call.destinations),
            list(call.amounts),
            list(call.currencies),
            list(call.descriptions),
            call.batch_id,
            call.atomic,
            call.request_id,
            call.large_threshold,
            _list(call.targets),
            _list(call.execute_at),
            _list(call.execute_before),
            _list(call.expires_in),
            call.max_pending,
            call.metadata,
            call.batch_metadata,
        )
    )


def _list(values: Sequence[object] | None) -> list[object] | None:
    return None if values is None else list(values)


# The same function on a SQLAlchemy session, inside that session's transaction: for
# a deposit applied by an approval (domain/services/approvals.py), which must commit
# together with the approval's decision. Values go in as text and are cast here, so
# the call does not depend on how the driver adapts uuids or arrays.
_ACCEPT_IN_SESSION = text(
    "SELECT outcome, item, detail, transfer::text FROM settle_accept("
    "CAST(:user_id AS uuid), :key, :fingerprint, CAST(:kinds AS text[]), "
    "CAST(:accounts AS uuid[]), CAST(:destinations AS text[]), CAST(:amounts AS bigint[]), "
    "CAST(:currencies AS text[]), CAST(:descriptions AS text[]), CAST(:batch_id AS uuid), "
    ":atomic, CAST(:request_id AS text), CAST(:large_threshold AS bigint), "
    "CAST(:targets AS uuid[]), CAST(:execute_at AS timestamptz[]), "
    "CAST(:execute_before AS timestamptz[]), CAST(:expires_in AS integer[]), "
    "CAST(:max_pending AS integer), CAST(:metadata AS jsonb), CAST(:batch_metadata AS jsonb))"
)


def accept_in_session(session: Session, call: AcceptCall) -> list[Row]:
    parameters = {
        **{field.name: getattr(call, field.name) for field in fields(call)},
        "user_id": str(call.user_id),
        "accounts": [str(a) if a else None for a in call.accounts],
        "targets": None if call.targets is None else [str(t) if t else None for t in call.targets],
        "batch_id": str(call.batch_id) if call.batch_id else None,
    }
    return _rows(session.execute(_ACCEPT_IN_SESSION, parameters).all())


# Backpressure's Retry-After (the refusal path only): how many debits of the account
# were applied over the last window. Reads the account's newest transfers by index.
_RECENTLY_DRAINED = """
SELECT count(*) FROM (
    SELECT completed_at FROM transfers
     WHERE source_account_id = $1 ORDER BY seq DESC LIMIT 5000) recent
 WHERE completed_at > now() - make_interval(secs => $2)
"""


async def recently_drained(conn: Connection, account_id: uuid.UUID, *, window_seconds: int) -> int:
    rows = await conn.fetch(_RECENTLY_DRAINED, account_id, float(window_seconds))
    return int(rows[0][0])
