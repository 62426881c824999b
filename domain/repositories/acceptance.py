"""Recording money requests: one call of `settle_accept` (migration 0010) per request.

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
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
)


@dataclass(frozen=True, kw_only=True)
class AcceptCall:
    """The arguments of `settle_accept`, one list entry per item."""

    user_id: uuid.UUID
    key: str
    fingerprint: str
    kinds: Sequence[str]
    accounts: Sequence[uuid.UUID]
    destinations: Sequence[str | None]
    amounts: Sequence[int]
    currencies: Sequence[str]
    descriptions: Sequence[str | None]
    batch_id: uuid.UUID | None
    atomic: bool
    request_id: str | None
    large_threshold: int | None
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
            call.metadata,
            call.batch_metadata,
        )
    )


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
    "CAST(:metadata AS jsonb), CAST(:batch_metadata AS jsonb))"
)


def accept_in_session(session: Session, call: AcceptCall) -> list[Row]:
    parameters = {
        **{field.name: getattr(call, field.name) for field in fields(call)},
        "user_id": str(call.user_id),
        "accounts": [str(a) for a in call.accounts],
        "batch_id": str(call.batch_id) if call.batch_id else None,
    }
    return _rows(session.execute(_ACCEPT_IN_SESSION, parameters).all())
