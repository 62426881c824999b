"""The engine's set-based SQL: a lane's pending transfers, the account locks, bulk writes.

One statement per step for a whole batch, so a batch of a hundred transfers
costs about as many round trips as a batch of one. Rows come back as plain
tuples-with-names (no ORM objects on the hot path).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

# Sent in the transaction that finishes transfers (delivered only once it commits):
# comma-separated transfer and batch ids. Gateways LISTEN to wake long-polls.
FINISHED_CHANNEL = "settle_finished"
_NOTIFY_CHUNK = 200  # ids per notification: 37 bytes each, PostgreSQL's limit is 8000

_TRANSFER_COLUMNS = """
    t.id, t.seq, t.kind, t.status, t.failure_code, t.source_account_id,
    t.destination_account_id, t.amount, t.currency, t.description, t.initiated_by,
    t.created_at, t.completed_at, t.lane, t.batch_id, t.batch_index,
    COALESCE(b.atomic, false) AS atomic
"""


def pending_in_lane(
    session: Session, lane: int, *, limit: int, lock: bool = False
) -> Sequence[Row[Any]]:
    """The oldest pending transfers of a lane, in acceptance order.

    With `lock`, the rows are locked too (FOR UPDATE OF t): a concurrent drain of
    the same lane then waits, and finds them no longer pending.
    """
    # Only constant SQL is composed here; every value is a bound parameter.
    return session.execute(
        text(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers t"  # noqa: S608 (constant SQL)
            " LEFT JOIN transfer_batches b ON b.id = t.batch_id"
            " WHERE t.lane = :lane AND t.status = 'pending'"
            " ORDER BY t.seq LIMIT :limit" + (" FOR UPDATE OF t" if lock else "")
        ),
        {"lane": lane, "limit": limit},
    ).all()


def pending_of_batches(
    session: Session, batch_ids: Collection[uuid.UUID], *, lock: bool = False
) -> Sequence[Row[Any]]:
    """Every pending item of these batches (an atomic batch is applied whole)."""
    if not batch_ids:
        return []
    return session.execute(
        text(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers t"  # noqa: S608 (constant SQL)
            " JOIN transfer_batches b ON b.id = t.batch_id"
            " WHERE t.batch_id = ANY(CAST(:ids AS uuid[])) AND t.status = 'pending'"
            " ORDER BY t.seq" + (" FOR UPDATE OF t" if lock else "")
        ),
        {"ids": [str(i) for i in batch_ids]},
    ).all()


def oldest_pending_elsewhere(
    session: Session, lane: int, sources: Collection[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Per source account: the oldest pending transfer it has in another lane.

    Only atomic batches put a source's transfers in a lane that is not its own;
    a transfer waits while an older one of the same source is pending elsewhere
    (first in, first out per source, across lanes).
    """
    if not sources:
        return {}
    rows = session.execute(
        text(
            "SELECT source_account_id, MIN(seq) FROM transfers"
            " WHERE status = 'pending' AND lane <> :lane"
            " AND source_account_id = ANY(CAST(:ids AS uuid[]))"
            " GROUP BY source_account_id"
        ),
        {"lane": lane, "ids": [str(i) for i in sources]},
    )
    return {source: int(seq) for source, seq in rows}


def lock_accounts(session: Session, account_ids: Iterable[uuid.UUID]) -> Sequence[Row[Any]]:
    """SELECT ... FOR NO KEY UPDATE in ascending id order (see accounts.lock_accounts)."""
    return session.execute(
        text(
            "SELECT id, kind, status, currency, owner_id, balance, overdraft_limit,"
            " last_sequence, daily_outgoing_limit, daily_sent, daily_sent_on"
            " FROM accounts WHERE id = ANY(CAST(:ids AS uuid[]))"
            " ORDER BY id FOR NO KEY UPDATE"
        ),
        {"ids": sorted(str(i) for i in set(account_ids))},
    ).all()


def insert_entries(session: Session, entries: Sequence[dict[str, Any]]) -> list[int]:
    """Appends entries (in order); returns their ids in the same order."""
    if not entries:
        return []
    rows = session.execute(
        text(
            "INSERT INTO ledger_entries (transfer_id, account_id, amount, currency,"
            " balance_before, balance_after, sequence, created_at)"
            " SELECT * FROM unnest(CAST(:transfer_ids AS uuid[]), CAST(:account_ids AS uuid[]),"
            " CAST(:amounts AS bigint[]), CAST(:currencies AS text[]),"
            " CAST(:befores AS bigint[]), CAST(:afters AS bigint[]),"
            " CAST(:sequences AS bigint[]), CAST(:created AS timestamptz[]))"
            " RETURNING id, account_id::text, sequence"
        ),
        {
            "transfer_ids": [str(e["transfer_id"]) for e in entries],
            "account_ids": [str(e["account_id"]) for e in entries],
            "amounts": [e["amount"] for e in entries],
            "currencies": [e["currency"] for e in entries],
            "befores": [e["balance_before"] for e in entries],
            "afters": [e["balance_after"] for e in entries],
            "sequences": [e["sequence"] for e in entries],
            "created": [e["created_at"] for e in entries],
        },
    ).all()
    # Map ids back through (account, sequence), which is unique: RETURNING order is
    # not guaranteed to follow the input order.
    by_key = {(account, int(sequence)): int(entry_id) for entry_id, account, sequence in rows}
    return [by_key[(str(e["account_id"]), e["sequence"])] for e in entries]


def finish_transfers(
    session: Session, outcomes: Sequence[tuple[uuid.UUID, str, str | None]], now: datetime
) -> None:
    """Sets status, failure code and completed_at of each (id, status, failure_code)."""
    if not outcomes:
        return
    session.execute(
        text(
            "UPDATE transfers t SET status = u.status, failure_code = u.failure_code,"
            " completed_at = :now"
            " FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]),"
            " CAST(:codes AS text[])) AS u(id, status, failure_code)"
            " WHERE t.id = u.id AND t.status = 'pending'"
        ),
        {
            "ids": [str(o[0]) for o in outcomes],
            "statuses": [o[1] for o in outcomes],
            "codes": [o[2] for o in outcomes],
            "now": now,
        },
    )


def update_accounts(session: Session, states: Sequence[dict[str, Any]]) -> None:
    """Writes back balance, last sequence and the daily counter of changed accounts."""
    if not states:
        return
    session.execute(
        text(
            "UPDATE accounts a SET balance = u.balance, last_sequence = u.last_sequence,"
            " daily_sent = u.daily_sent, daily_sent_on = u.daily_sent_on"
            " FROM unnest(CAST(:ids AS uuid[]), CAST(:balances AS bigint[]),"
            " CAST(:sequences AS bigint[]), CAST(:sent AS bigint[]), CAST(:days AS date[]))"
            " AS u(id, balance, last_sequence, daily_sent, daily_sent_on)"
            " WHERE a.id = u.id"
        ),
        {
            "ids": [str(s["id"]) for s in states],
            "balances": [s["balance"] for s in states],
            "sequences": [s["last_sequence"] for s in states],
            "sent": [s["daily_sent"] for s in states],
            "days": [s["daily_sent_on"] for s in states],
        },
    )


def notify_finished(session: Session, ids: Sequence[uuid.UUID]) -> None:
    unique = list(dict.fromkeys(str(i) for i in ids))
    for start in range(0, len(unique), _NOTIFY_CHUNK):
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {
                "channel": FINISHED_CHANNEL,
                "payload": ",".join(unique[start : start + _NOTIFY_CHUNK]),
            },
        )
