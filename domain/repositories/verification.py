"""Read-only consistency queries over the whole ledger, used by `settle verify`.

`CHECKS` is the list `settle verify` runs, in order; add a `Check` to extend it.
Each query returns the offending rows only (a healthy ledger returns nothing),
first bad row first, and names what an operator looks up: the ledger entry by
`entry` id and the account by its `account` number (transfers by id). Every query
is set-based: a few scans and hash joins whatever the ledger's size, never one
index lookup per row (issue 14: 1,000,000 entries in seconds, not minutes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from domain.models import LedgerVerification


@dataclass(frozen=True)
class Check:
    name: str
    sql: str  # SELECT ... of the offending rows, ORDER BY first bad row first


# Entries in per-account order with what the previous entry of the account says,
# for the two continuity checks.
_CHAINED_ENTRIES = """
    SELECT id, account_id, sequence, balance_before,
           COALESCE(LAG(sequence) OVER w, 0) + 1 AS expected_sequence,
           COALESCE(LAG(balance_after) OVER w, 0) AS previous_after
      FROM ledger_entries
    WINDOW w AS (PARTITION BY account_id ORDER BY sequence, id)"""

CHECKS: list[Check] = [
    Check(
        "balance_matches_entries",
        """
        SELECT a.number AS account, l.last_entry AS entry, a.balance,
               COALESCE(l.total, 0) AS ledger
          FROM accounts a
          LEFT JOIN (SELECT account_id, SUM(amount)::bigint AS total, MAX(id) AS last_entry
                       FROM ledger_entries GROUP BY account_id) l ON l.account_id = a.id
         WHERE a.balance <> COALESCE(l.total, 0)
         ORDER BY a.number""",
    ),
    Check(
        "sequence_gapless",
        f"""
        SELECT entry, account, sequence, expected FROM (
            SELECT e.id AS entry, a.number AS account, e.sequence,
                   e.expected_sequence AS expected, 1 AS rank
              FROM ({_CHAINED_ENTRIES}) e JOIN accounts a ON a.id = e.account_id
             WHERE e.sequence <> e.expected_sequence
            UNION ALL  -- the account's stored last_sequence against its last entry
            SELECT l.last_entry, a.number, a.last_sequence, COALESCE(l.last, 0), 2
              FROM accounts a
              LEFT JOIN (SELECT account_id, MAX(sequence) AS last, MAX(id) AS last_entry
                           FROM ledger_entries GROUP BY account_id) l ON l.account_id = a.id
             WHERE a.last_sequence <> COALESCE(l.last, 0)) found
         ORDER BY entry NULLS LAST, account, rank""",  # noqa: S608  # nosec B608: constant SQL
    ),
    Check(
        "balances_continue",
        f"""
        SELECT e.id AS entry, a.number AS account, e.sequence, e.balance_before,
               e.previous_after
          FROM ({_CHAINED_ENTRIES}) e JOIN accounts a ON a.id = e.account_id
         WHERE e.balance_before <> e.previous_after
         ORDER BY e.id""",  # noqa: S608  # nosec B608: constant SQL
    ),
    Check(
        "transfers_balanced",
        """
        SELECT u.transfer::text AS transfer, u.currency, u.total,
               array_agg(e.id ORDER BY e.id) AS entries,
               array_agg(a.number ORDER BY e.id) AS accounts
          FROM (SELECT transfer_id AS transfer, currency, SUM(amount)::bigint AS total
                  FROM ledger_entries GROUP BY transfer_id, currency
                HAVING SUM(amount) <> 0) u
          JOIN ledger_entries e ON e.transfer_id = u.transfer AND e.currency = u.currency
          JOIN accounts a ON a.id = e.account_id
         GROUP BY u.transfer, u.currency, u.total
         ORDER BY MIN(e.id)""",
    ),
    Check(
        "terminal_transfers_have_their_entries",
        """
        SELECT t.id::text AS transfer, t.status, COALESCE(c.entries, 0) AS entries,
               c.first_entry AS entry
          FROM transfers t
          LEFT JOIN (SELECT transfer_id, COUNT(*) AS entries, MIN(id) AS first_entry
                       FROM ledger_entries GROUP BY transfer_id) c ON c.transfer_id = t.id
         WHERE (t.status = 'succeeded' AND t.kind <> 'void' AND COALESCE(c.entries, 0) <> 2)
            OR ((t.status <> 'succeeded' OR t.kind = 'void') AND c.entries IS NOT NULL)
         ORDER BY t.seq""",
    ),
    Check(
        "entries_match_their_transfer",
        """
        SELECT e.id AS entry, a.number AS account, t.id::text AS transfer, e.amount,
               e.currency
          FROM ledger_entries e
          JOIN transfers t ON t.id = e.transfer_id
          JOIN accounts a ON a.id = e.account_id
         WHERE NOT ((e.account_id = t.source_account_id AND e.amount = -t.amount)
                 OR (e.account_id = t.destination_account_id AND e.amount = t.amount))
            OR e.currency <> t.currency
         ORDER BY e.id""",
    ),
    Check(
        # Audit rows and events are ordered by the id of the transaction that wrote them
        # (xid8, server-wide). A row from a transaction this server has not run yet was
        # restored from another server (pg_dump/pg_restore): new rows would sort before
        # it, so the sealer would skip them and event cursors would miss them. See
        # README "Backup and restore".
        "xids_not_in_the_future",
        """
        SELECT w.written_to AS "table", w.max_xid::text AS max_xid,
               pg_snapshot_xmax(pg_current_snapshot())::text AS next_xid
          FROM (SELECT 'audit_events' AS written_to,
                       (SELECT xid FROM audit_events ORDER BY xid DESC LIMIT 1) AS max_xid
                UNION ALL
                SELECT 'events', (SELECT xid FROM events ORDER BY xid DESC LIMIT 1)) w
         WHERE w.max_xid >= pg_snapshot_xmax(pg_current_snapshot())
         ORDER BY 1""",
    ),
    Check(
        "no_balance_below_limit",
        """
        SELECT number AS account, balance, overdraft_limit FROM accounts
         WHERE kind = 'customer' AND balance < -overdraft_limit
         ORDER BY number""",
    ),
    # Holds and reversals (migration 0009).
    Check(
        "reversals_within_original",
        """
        SELECT o.id::text AS transfer, o.amount, SUM(r.amount) AS reversed
          FROM transfers o JOIN transfers r ON r.reverses = o.id
         WHERE r.status NOT IN ('failed', 'canceled')
         GROUP BY o.id HAVING SUM(r.amount) > o.amount
         ORDER BY MIN(o.seq)""",
    ),
    Check(
        "captured_holds_have_their_entries",
        """
        SELECT h.id::text AS transfer, h.captured_amount,
               COUNT(DISTINCT c.id) AS captures, MIN(c.amount) AS capture_amount,
               COUNT(e.id) AS entries, MIN(e.id) AS entry
          FROM transfers h
          LEFT JOIN transfers c ON c.hold_id = h.id AND c.kind = 'capture'
                               AND c.status = 'succeeded'
          LEFT JOIN ledger_entries e ON e.transfer_id = c.id
         WHERE h.kind = 'hold' AND h.status = 'captured'
         GROUP BY h.id
        HAVING COUNT(DISTINCT c.id) <> 1 OR COUNT(e.id) <> 2
            OR MIN(c.amount) <> h.captured_amount
         ORDER BY MIN(h.seq)""",
    ),
    Check(
        "available_balances_recompute",
        """
        SELECT a.number AS account, a.held, COALESCE(SUM(h.amount), 0) AS active_holds
          FROM accounts a
          LEFT JOIN transfers h ON h.source_account_id = a.id AND h.status = 'held'
         GROUP BY a.id
        HAVING a.held <> COALESCE(SUM(h.amount), 0)
            OR (a.kind = 'customer' AND a.balance - a.held < -a.overdraft_limit)
         ORDER BY a.number""",
    ),
    Check(  # the count that decides `batch.completed` (migration 0012)
        "batches_count_their_finished_transfers",
        """
        SELECT b.id::text AS batch, b.item_count, b.finished_items,
               COUNT(t.id) AS transfers,
               COUNT(t.id) FILTER (WHERE t.status IN ('succeeded', 'failed', 'canceled'))
                   AS finished
          FROM transfer_batches b
          LEFT JOIN transfers t ON t.batch_id = b.id
         GROUP BY b.id
        HAVING COUNT(t.id) <> b.item_count
            OR b.finished_items <> COUNT(t.id) FILTER (
                   WHERE t.status IN ('succeeded', 'failed', 'canceled'))
         ORDER BY MIN(b.created_at)""",
    ),
]

LIMIT_PER_CHECK = 20


def check_named(name: str) -> Check:
    return next(check for check in CHECKS if check.name == name)


# Sorts and hash joins over a million rows stay in memory instead of spilling to
# disk; set for verify's own read-only transaction only.
WORK_MEM = "64MB"


def prepare(session: Session) -> None:
    """Per-transaction settings of a verify (after its isolation level is chosen).

    No nested loops: every check reads whole tables, which hash and merge joins do in
    one pass each. On statistics older than the data (a table that grew since its last
    autoanalyze; the app role cannot ANALYZE), the planner took a nested loop over an
    aggregated subquery and a check went quadratic: minutes at 100,000 transfers,
    against one second this way."""
    session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    session.execute(text("SET LOCAL enable_nestloop = off"))


def run_check(session: Session, check: Check) -> list[dict[str, Any]]:
    rows = session.execute(
        text(f"SELECT * FROM ({check.sql}) found LIMIT {LIMIT_PER_CHECK}")  # noqa: S608  # nosec B608: constant SQL
    )
    return [dict(row._mapping) for row in rows]


def export_snapshot(session: Session) -> str:
    """The snapshot of the session's (REPEATABLE READ) transaction, for another to share."""
    return str(session.execute(text("SELECT pg_export_snapshot()")).scalar_one())


def import_snapshot(session: Session, snapshot: str) -> None:
    """Must be the first statement of the session's REPEATABLE READ transaction."""
    session.execute(text("SET TRANSACTION SNAPSHOT :s").bindparams(s=snapshot))


def totals(session: Session) -> dict[str, int]:
    row = session.execute(
        text(
            "SELECT (SELECT COUNT(*) FROM accounts) AS accounts,"
            " (SELECT COUNT(*) FROM ledger_entries) AS entries,"
            " (SELECT COUNT(*) FROM transfers) AS transfers"
        )
    ).one()
    return {key: int(value) for key, value in row._mapping.items()}


# The chain in chain order, with just what the hash covers, as plain driver values (no
# ORM objects). `at` is formatted here exactly as Python's `isoformat()` of the instant
# in UTC would ("…T09:00:00.123456+00:00", no fraction on a whole second), which spares
# a datetime per row; `data` comes as text, parsed by the caller.
_CHAIN = text(
    """
    SELECT s.chain_seq, s.prev_hash, s.hash, s.key_id,
           to_char(u.at, 'YYYY-MM-DD"T"HH24:MI:SS')
           || CASE WHEN to_char(u.at, 'US') = '000000' THEN '' ELSE to_char(u.at, '.US') END
           || '+00:00',
           a.event_type, a.actor_id::text, a.subject_type, a.subject_id, a.request_id,
           a.data::text
      FROM audit_seals s JOIN audit_events a ON a.id = s.audit_id
     CROSS JOIN LATERAL (SELECT a.occurred_at AT TIME ZONE 'UTC' AS at) u
     WHERE s.chain_seq BETWEEN :first AND :last
     ORDER BY s.chain_seq"""
)
CHAIN_BATCH = 10_000
_LAST_POSSIBLE = 2**63 - 1


def stream_chain(
    session: Session, *, first: int = 0, last: int = _LAST_POSSIBLE
) -> Iterator[tuple[Any, ...]]:
    """The sealed events with `first <= chain_seq <= last`, in chain order, through a
    server-side cursor: memory stays flat whatever the chain's length. Tuples of the
    columns of `_CHAIN`."""
    result = session.connection().execute(
        _CHAIN,
        {"first": first, "last": last},
        execution_options={"stream_results": True, "max_row_buffer": CHAIN_BATCH},
    )
    # An explicit size: without one, partitions() fetches everything at once.
    for partition in result.partitions(CHAIN_BATCH):
        yield from partition


def last_chain_seq(session: Session) -> int:
    return int(
        session.execute(text("SELECT COALESCE(MAX(chain_seq), 0) FROM audit_seals")).scalar_one()
    )


def record(session: Session, *, ok: bool, problems: int, summary: dict[str, Any]) -> None:
    session.add(LedgerVerification(ok=ok, problems=problems, summary=summary))
    session.flush()


def latest(session: Session) -> LedgerVerification | None:
    return session.scalars(
        select(LedgerVerification).order_by(LedgerVerification.id.desc()).limit(1)
    ).first()
