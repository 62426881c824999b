"""The engine's set-based SQL: a lane's pending transfers, the account locks, bulk writes.

One statement per step for a whole batch, so a batch of a hundred transfers
costs about as many round trips as a batch of one. Rows come back as plain
tuples-with-names (no ORM objects on the hot path).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from domain.repositories.prepared import Prepared
from domain.uow import QueuedDelivery

# Sent in the transaction that finishes transfers (delivered only once it commits):
# comma-separated transfer and batch ids. Gateways LISTEN to wake long-polls.
FINISHED_CHANNEL = "settle_finished"
_NOTIFY_CHUNK = 200  # ids per notification: 37 bytes each, PostgreSQL's limit is 8000

_TRANSFER_COLUMNS = """
    t.id, t.seq, t.kind, t.status, t.failure_code, t.source_account_id,
    t.destination_account_id, t.amount, t.currency, t.description, t.initiated_by,
    t.created_at, t.completed_at, t.lane, t.batch_id, t.batch_index,
    t.reverses, t.hold_id, t.execute_at, t.execute_before, t.expires_at, t.captured_amount,
    t.metadata,
    COALESCE(b.atomic, false) AS atomic,
    u.role AS initiator_role,
    (SELECT o.seq FROM transfers o
      WHERE o.status = 'pending' AND o.source_account_id = ANY(ARRAY[t.source_account_id])
        AND (o.execute_at IS NULL OR o.execute_at <= now())
        AND o.lane <> ALL(CAST(:slots AS smallint[]))
      ORDER BY o.source_account_id, o.seq LIMIT 1) AS older_elsewhere
"""
# Due (`pending_in_lane`, `older_elsewhere`): a scheduled transfer (`execute_at`) is not
# applied, and holds nothing back, before its time; among due transfers each source
# stays first in, first out.
# `older_elsewhere`: the oldest pending transfer of the same source in another lane
# (outside the slots being drained). Written as `source = ANY(ARRAY[...]) ORDER BY
# source, seq LIMIT 1`, not `MIN(seq) ... source = ...`, for the reason given in
# `pending_in_lane`: with statistics that say most transfers are pending, the planner
# answered MIN(seq) by walking `transfers_seq_key` from the oldest transfer of all, and
# since a source has nothing pending in other lanes unless an atomic batch put it
# there, the walk read the whole table for every transfer of the batch.
# Only atomic batches put a source's transfers outside its own lane; a transfer
# waits while an older one of its source is pending elsewhere (FIFO across lanes).


# Only constant SQL is composed here; every value is a bound parameter.
_LANE_READ_SQL = (
    f"SELECT {_TRANSFER_COLUMNS} FROM transfers t"  # noqa: S608  # nosec B608: constant SQL
    " LEFT JOIN transfer_batches b ON b.id = t.batch_id"
    " JOIN users u ON u.id = t.initiated_by"
    " WHERE t.id = ANY(ARRAY("
    "  SELECT oldest.id FROM unnest(CAST(:slots AS smallint[])) AS s(slot)"
    "  CROSS JOIN LATERAL (SELECT p.id, p.seq FROM transfers p"
    "   WHERE p.lane = ANY(ARRAY[s.slot]) AND p.status = 'pending'"
    "   AND (p.execute_at IS NULL OR p.execute_at <= now())"
    "   ORDER BY p.lane, p.seq LIMIT :limit) oldest"
    "  ORDER BY oldest.seq LIMIT :limit))"
    " ORDER BY t.seq"
)
_LANE_READ = Prepared("settle_lane_read", _LANE_READ_SQL, {"limit": "integer"})
_LANE_READ_LOCKED = Prepared(
    "settle_lane_read_locked", _LANE_READ_SQL + " FOR UPDATE OF t", {"limit": "integer"}
)


def pending_in_lane(
    session: Session, slots: Sequence[int], *, limit: int, lock: bool = False
) -> list[Row[Any]]:
    """The oldest pending transfers of a lane (its slots), in acceptance order.

    With `lock`, the rows are locked too (FOR UPDATE OF t): a concurrent drain of
    the same lane then waits, and finds them no longer pending.

    What is read is bounded by the batch size, not by the backlog: each slot's oldest
    `limit` come from its own walk of `transfers_pending_by_lane (lane, seq)`, the
    lane's oldest `limit` from those (an InitPlan: evaluated once), and the rows by
    primary key. A `lane = ANY(slots) ORDER BY seq` scan had to read and sort every
    pending transfer of the lane first (27 ms a batch behind a backlog of 10,000).
    The status is checked here, after the lock, not in the WHERE: there it would let
    the planner read the rows through the lane index again.

    The slot's walk is written `lane = ANY(ARRAY[slot]) ORDER BY lane, seq`, not
    `lane = slot ORDER BY seq`, so that only the lane index can give its order. With
    the plain form, statistics taken while most transfers were pending (a young table
    with a backlog, as autovacuum's ANALYZE would see it) made the planner walk the
    whole table in `seq` order (`transfers_seq_key`), skipping every finished transfer
    of every lane, per slot and per batch: a cost that grows with the table, when a
    backlog needs the engine most (the engine alone on 20,000 pending transfers after
    such an ANALYZE: 1,547-1,914/s, against 2,401-2,826/s written as below). With a
    one-element array the lane is no longer a constant to the planner, `(lane, seq)`
    order is what the lane index gives, and `seq` order alone would need a sort of the
    lane's whole backlog.
    """
    statement = _LANE_READ_LOCKED if lock else _LANE_READ
    rows = statement.execute(session, {"slots": list(slots), "limit": limit}).all()
    # Locked after a concurrent drain of the lane committed: no longer pending.
    return [row for row in rows if row.status == "pending"]


def has_due_pending(session: Session, slots: Sequence[int]) -> bool:
    """Whether the lane (its slots) holds a due pending transfer: the drain's last look.

    Constant SQL, not an ORM select: it runs after every batch that was not full, and
    building and caching an ORM statement cost more than the query (an eighth of a
    drain's CPU at moderate load)."""
    found: bool = session.execute(
        text(
            "SELECT EXISTS (SELECT FROM transfers t"
            " WHERE t.lane = ANY(CAST(:slots AS smallint[])) AND t.status = 'pending'"
            " AND (t.execute_at IS NULL OR t.execute_at <= now()))"
        ),
        {"slots": list(slots)},
    ).scalar_one()
    return found


def pending_of_batches(
    session: Session,
    batch_ids: Collection[uuid.UUID],
    slots: Sequence[int],
    *,
    lock: bool = False,
) -> Sequence[Row[Any]]:
    """Every pending item of these batches (an atomic batch is applied whole)."""
    if not batch_ids:
        return []
    return session.execute(
        text(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers t"  # noqa: S608  # nosec B608: constant SQL
            " JOIN transfer_batches b ON b.id = t.batch_id"
            " JOIN users u ON u.id = t.initiated_by"
            " WHERE t.batch_id = ANY(CAST(:ids AS uuid[])) AND t.status = 'pending'"
            " ORDER BY t.seq" + (" FOR UPDATE OF t" if lock else "")
        ),
        {"ids": [str(i) for i in batch_ids], "slots": list(slots)},
    ).all()


_LOCK_ACCOUNTS_SQL = (
    "SELECT a.id, a.number, a.kind, a.status, a.currency, a.owner_id, a.balance,"
    " a.overdraft_limit, a.last_sequence, a.daily_outgoing_limit, a.daily_sent,"
    " a.daily_sent_on, a.balance_alert_count, a.held, u.role AS owner_role"
    " FROM accounts a LEFT JOIN users u ON u.id = a.owner_id"
    " WHERE a.id = ANY(CAST(:ids AS uuid[]))"
    " ORDER BY a.id FOR NO KEY UPDATE OF a"
)
_LOCK_ACCOUNTS = Prepared("settle_lock_accounts", _LOCK_ACCOUNTS_SQL)
_LOCK_ACCOUNTS_SKIPPING = Prepared(
    "settle_lock_accounts_skipping", _LOCK_ACCOUNTS_SQL + " SKIP LOCKED"
)


def lock_accounts(
    session: Session, account_ids: Iterable[uuid.UUID], *, skip_locked: bool = False
) -> Sequence[Row[Any]]:
    """SELECT ... FOR NO KEY UPDATE in ascending id order (see accounts.lock_accounts),
    with the owner's role (operators see every leg in their events) and the number of
    balance alerts (read under the lock, so it is never stale: creating an alert updates
    it, which waits for this lock).

    `skip_locked`: leave out the accounts another transaction holds instead of waiting
    for them (the engine defers what touches them; see engine.apply_next_batch)."""
    statement = _LOCK_ACCOUNTS_SKIPPING if skip_locked else _LOCK_ACCOUNTS
    return statement.execute(session, {"ids": sorted(str(i) for i in set(account_ids))}).all()


def lock_holds(session: Session, hold_ids: Iterable[uuid.UUID]) -> Sequence[Row[Any]]:
    """The holds that this batch's captures and voids act on, locked in id order (after
    the batch's pending rows, before the accounts: the sweeper's expiry takes holds
    then accounts too, and skips holds locked here). No holds named: no query."""
    hold_ids = set(hold_ids)
    if not hold_ids:
        return []
    return session.execute(
        text(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers t"  # noqa: S608  # nosec B608: constant SQL
            " LEFT JOIN transfer_batches b ON b.id = t.batch_id"
            " JOIN users u ON u.id = t.initiated_by"
            " WHERE t.id = ANY(CAST(:ids AS uuid[])) AND t.kind = 'hold'"
            " ORDER BY t.id FOR UPDATE OF t"
        ),
        {"ids": sorted(str(i) for i in hold_ids), "slots": []},
    ).all()


def due_expired_holds(session: Session, *, limit: int) -> Sequence[Row[Any]]:
    """Held holds past their expiry, oldest first, locked; holds a drain is working on
    right now are skipped (that drain settles them, or the next sweep does)."""
    return session.execute(
        text(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers t"  # noqa: S608  # nosec B608: constant SQL
            " LEFT JOIN transfer_batches b ON b.id = t.batch_id"
            " JOIN users u ON u.id = t.initiated_by"
            " WHERE t.status = 'held' AND t.expires_at <= now()"
            " ORDER BY t.expires_at LIMIT :limit FOR UPDATE OF t SKIP LOCKED"
        ),
        {"limit": limit, "slots": []},
    ).all()


# Everything a batch writes to the ledger, in one statement: entries, outcomes,
# balances and audit rows. Returns the new entries' ids.
_WRITE_BATCH = Prepared(
    "settle_write_batch",
    """
    WITH entries AS (
        INSERT INTO ledger_entries (transfer_id, account_id, amount, currency,
                                    balance_before, balance_after, sequence, created_at)
        SELECT * FROM unnest(CAST(:e_transfers AS uuid[]), CAST(:e_accounts AS uuid[]),
                             CAST(:e_amounts AS bigint[]), CAST(:e_currencies AS text[]),
                             CAST(:e_befores AS bigint[]), CAST(:e_afters AS bigint[]),
                             CAST(:e_sequences AS bigint[]), CAST(:e_created AS timestamptz[]))
        RETURNING id, account_id::text AS account, sequence
    ), finished AS (
        UPDATE transfers t SET status = o.status, failure_code = o.failure_code,
                               completed_at = :now
          FROM unnest(CAST(:t_ids AS uuid[]), CAST(:t_statuses AS text[]),
                      CAST(:t_codes AS text[])) AS o(id, status, failure_code)
         WHERE t.id = o.id AND t.status = 'pending'
        RETURNING t.id
    ), holds_moved AS (
        -- A held hold captured, voided or expired (never one this batch also finished).
        UPDATE transfers t SET status = h.status, captured_amount = h.captured,
                               completed_at = :now
          FROM unnest(CAST(:h_ids AS uuid[]), CAST(:h_statuses AS text[]),
                      CAST(:h_captured AS bigint[])) AS h(id, status, captured)
         WHERE t.id = h.id AND t.status = 'held'
        RETURNING t.id
    ), balances AS (
        UPDATE accounts a SET balance = s.balance, last_sequence = s.last_sequence,
                              daily_sent = s.daily_sent, daily_sent_on = s.daily_sent_on,
                              held = s.held
          FROM unnest(CAST(:a_ids AS uuid[]), CAST(:a_balances AS bigint[]),
                      CAST(:a_sequences AS bigint[]), CAST(:a_sent AS bigint[]),
                      CAST(:a_days AS date[]), CAST(:a_held AS bigint[]))
               AS s(id, balance, last_sequence, daily_sent, daily_sent_on, held)
         WHERE a.id = s.id
        RETURNING a.id
    ), audited AS (
        INSERT INTO audit_events (occurred_at, event_type, actor_id, subject_type,
                                  subject_id, request_id, data)
        SELECT * FROM unnest(CAST(:au_at AS timestamptz[]), CAST(:au_types AS text[]),
                             CAST(:au_actors AS uuid[]), CAST(:au_subject_types AS text[]),
                             CAST(:au_subject_ids AS text[]), CAST(:au_requests AS text[]),
                             CAST(:au_data AS jsonb[]))
        RETURNING id
    )
    SELECT 'entry' AS kind, id, account, sequence FROM entries
    UNION ALL SELECT 'finished', NULL, NULL, count(*) FROM finished
    UNION ALL SELECT 'holds', NULL, NULL, count(*) FROM holds_moved
    UNION ALL SELECT 'balances', NULL, NULL, count(*) FROM balances
    UNION ALL SELECT 'audited', NULL, NULL, count(*) FROM audited
    """,
    {"now": "timestamptz"},
)


def write_batch(
    session: Session,
    *,
    entries: Sequence[dict[str, Any]],
    outcomes: Sequence[tuple[uuid.UUID, str, str | None]],
    accounts: Sequence[dict[str, Any]],
    audit_rows: Sequence[dict[str, Any]],
    now: datetime,
    holds: Sequence[tuple[uuid.UUID, str, int | None]] = (),
) -> list[int]:
    """One round trip for the whole batch; returns entry ids in the order of `entries`."""
    rows = _WRITE_BATCH.execute(
        session,
        {
            "e_transfers": [str(e["transfer_id"]) for e in entries],
            "e_accounts": [str(e["account_id"]) for e in entries],
            "e_amounts": [e["amount"] for e in entries],
            "e_currencies": [e["currency"] for e in entries],
            "e_befores": [e["balance_before"] for e in entries],
            "e_afters": [e["balance_after"] for e in entries],
            "e_sequences": [e["sequence"] for e in entries],
            "e_created": [e["created_at"] for e in entries],
            "t_ids": [str(o[0]) for o in outcomes],
            "t_statuses": [o[1] for o in outcomes],
            "t_codes": [o[2] for o in outcomes],
            "now": now,
            "a_ids": [str(a["id"]) for a in accounts],
            "a_balances": [a["balance"] for a in accounts],
            "a_sequences": [a["last_sequence"] for a in accounts],
            "a_sent": [a["daily_sent"] for a in accounts],
            "a_days": [a["daily_sent_on"] for a in accounts],
            "a_held": [a["held"] for a in accounts],
            "h_ids": [str(h[0]) for h in holds],
            "h_statuses": [h[1] for h in holds],
            "h_captured": [h[2] for h in holds],
            "au_at": [r["occurred_at"] for r in audit_rows],
            "au_types": [r["event_type"] for r in audit_rows],
            "au_actors": [str(r["actor_id"]) if r["actor_id"] else None for r in audit_rows],
            "au_subject_types": [r["subject_type"] for r in audit_rows],
            "au_subject_ids": [r["subject_id"] for r in audit_rows],
            "au_requests": [r["request_id"] for r in audit_rows],
            "au_data": [json.dumps(r["data"]) for r in audit_rows],
        },
    ).all()
    counts = {r.kind: int(r.sequence) for r in rows if r.kind != "entry"}
    if (
        counts["finished"] != len(outcomes)
        or counts["balances"] != len(accounts)
        or counts["holds"] != len(holds)
    ):
        # Under the engine's locks this cannot happen; raising rolls the batch back.
        raise RuntimeError(
            f"batch write mismatch: {counts['finished']}/{len(outcomes)} transfers, "
            f"{counts['holds']}/{len(holds)} holds, "
            f"{counts['balances']}/{len(accounts)} accounts"
        )
    # RETURNING order is not guaranteed to follow the input: map back through
    # (account, sequence), which is unique.
    by_key = {(r.account, int(r.sequence)): int(r.id) for r in rows if r.kind == "entry"}
    return [by_key[(str(e["account_id"]), e["sequence"])] for e in entries]


# Events, their webhook deliveries (every active endpoint of the recipient that is
# subscribed to the type, due after the immediate-send lease) and the completion
# notifications, in one statement. Returns the deliveries with their endpoints.
_PUBLISH = Prepared(
    "settle_publish",
    """
    WITH ev AS (
        INSERT INTO events (id, user_id, type, created_at, payload)
        SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:users AS uuid[]),
                             CAST(:types AS text[]), CAST(:created AS timestamptz[]),
                             CAST(:payloads AS jsonb[]))
        RETURNING seq, user_id, type
    ), delivered AS (
        INSERT INTO webhook_deliveries (id, endpoint_id, event_seq, status, attempts,
                                        next_attempt_at)
        SELECT gen_random_uuid(), w.id, ev.seq, 'pending', 0, :due
          FROM ev JOIN webhook_endpoints w
            ON w.user_id = ev.user_id AND w.status = 'active' AND w.deleted_at IS NULL
           AND ev.type = ANY(w.events)
        RETURNING id, endpoint_id
    )
    SELECT (SELECT array_agg(ARRAY[endpoint_id, id]) FROM delivered) AS deliveries,
           (SELECT string_agg(pg_notify(:channel, note)::text, '')
              FROM unnest(CAST(:notes AS text[])) AS note) AS notified
    """,
    {"due": "timestamptz", "channel": "text"},
)


def publish(
    session: Session,
    *,
    events: Sequence[dict[str, Any]],
    due: datetime,
    finished_ids: Sequence[uuid.UUID],
) -> list[QueuedDelivery]:
    unique = list(dict.fromkeys(str(i) for i in finished_ids))
    notes = [
        ",".join(unique[start : start + _NOTIFY_CHUNK])
        for start in range(0, len(unique), _NOTIFY_CHUNK)
    ]
    row = _PUBLISH.execute(
        session,
        {
            "ids": [e["id"] for e in events],
            "users": [str(e["user_id"]) for e in events],
            "types": [e["type"] for e in events],
            "created": [e["created_at"] for e in events],
            "payloads": [json.dumps(e["payload"]) for e in events],
            "due": due,
            "channel": FINISHED_CHANNEL,
            "notes": notes,
        },
    ).one()
    return [
        QueuedDelivery(uuid.UUID(str(endpoint)), uuid.UUID(str(delivery)))
        for endpoint, delivery in (row.deliveries or [])
    ]
