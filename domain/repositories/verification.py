"""Read-only consistency queries over the whole ledger, used by `settle verify`.

Each query returns the offending rows only, so a healthy ledger returns nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from domain.models import LedgerVerification

CHECKS: dict[str, str] = {
    "balance_matches_entries": """
        SELECT a.number AS account, a.balance, COALESCE(SUM(e.amount), 0) AS ledger
          FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
         GROUP BY a.id
        HAVING a.balance <> COALESCE(SUM(e.amount), 0)""",
    "sequence_gapless": """
        SELECT a.number AS account, a.last_sequence, COUNT(e.id) AS entries,
               COALESCE(MIN(e.sequence), 0) AS first, COALESCE(MAX(e.sequence), 0) AS last
          FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
         GROUP BY a.id
        HAVING COUNT(e.id) <> a.last_sequence
            OR COALESCE(MAX(e.sequence), 0) <> a.last_sequence
            OR (COUNT(e.id) > 0 AND MIN(e.sequence) <> 1)""",
    "balances_continue": """
        SELECT account_id::text AS account, sequence FROM (
            SELECT account_id, sequence, balance_before,
                   LAG(balance_after) OVER (PARTITION BY account_id ORDER BY sequence) AS prev
              FROM ledger_entries) chained
         WHERE balance_before <> COALESCE(prev, 0)""",
    "transfers_balanced": """
        SELECT transfer_id::text AS transfer, currency, SUM(amount) AS total
          FROM ledger_entries GROUP BY transfer_id, currency HAVING SUM(amount) <> 0""",
    "terminal_transfers_have_their_entries": """
        SELECT t.id::text AS transfer, t.status, COUNT(e.id) AS entries
          FROM transfers t LEFT JOIN ledger_entries e ON e.transfer_id = t.id
         GROUP BY t.id
        HAVING (t.status = 'succeeded' AND t.kind <> 'void' AND COUNT(e.id) <> 2)
            OR ((t.status <> 'succeeded' OR t.kind = 'void') AND COUNT(e.id) <> 0)""",
    "entries_match_their_transfer": """
        SELECT e.id AS entry, t.id::text AS transfer
          FROM ledger_entries e JOIN transfers t ON t.id = e.transfer_id
         WHERE NOT ((e.account_id = t.source_account_id AND e.amount = -t.amount)
                 OR (e.account_id = t.destination_account_id AND e.amount = t.amount))
            OR e.currency <> t.currency""",
    "no_balance_below_limit": """
        SELECT number AS account, balance, overdraft_limit FROM accounts
         WHERE kind = 'customer' AND balance < -overdraft_limit""",
    # Holds and reversals (migration 0009).
    "reversals_within_original": """
        SELECT o.id::text AS transfer, o.amount, SUM(r.amount) AS reversed
          FROM transfers o JOIN transfers r ON r.reverses = o.id
         WHERE r.status NOT IN ('failed', 'canceled')
         GROUP BY o.id HAVING SUM(r.amount) > o.amount""",
    "captured_holds_have_their_entries": """
        SELECT h.id::text AS hold, h.captured_amount,
               COUNT(c.id) AS captures, MIN(c.amount) AS capture_amount,
               COUNT(e.id) AS entries
          FROM transfers h
          LEFT JOIN transfers c ON c.hold_id = h.id AND c.kind = 'capture'
                               AND c.status = 'succeeded'
          LEFT JOIN ledger_entries e ON e.transfer_id = c.id
         WHERE h.kind = 'hold' AND h.status = 'captured'
         GROUP BY h.id
        HAVING COUNT(DISTINCT c.id) <> 1 OR COUNT(e.id) <> 2
            OR MIN(c.amount) <> h.captured_amount""",
    "available_balances_recompute": """
        SELECT a.number AS account, a.held, COALESCE(SUM(h.amount), 0) AS active_holds
          FROM accounts a
          LEFT JOIN transfers h ON h.source_account_id = a.id AND h.status = 'held'
         GROUP BY a.id
        HAVING a.held <> COALESCE(SUM(h.amount), 0)
            OR (a.kind = 'customer' AND a.balance - a.held < -a.overdraft_limit)""",
}

LIMIT_PER_CHECK = 20


def run_check(session: Session, name: str) -> list[dict[str, Any]]:
    rows = session.execute(text(CHECKS[name] + f"\n LIMIT {LIMIT_PER_CHECK}"))
    return [dict(row._mapping) for row in rows]


def totals(session: Session) -> dict[str, int]:
    row = session.execute(
        text(
            "SELECT (SELECT COUNT(*) FROM accounts) AS accounts,"
            " (SELECT COUNT(*) FROM ledger_entries) AS entries,"
            " (SELECT COUNT(*) FROM transfers) AS transfers"
        )
    ).one()
    return {key: int(value) for key, value in row._mapping.items()}


def record(session: Session, *, ok: bool, problems: int, summary: dict[str, Any]) -> None:
    session.add(LedgerVerification(ok=ok, problems=problems, summary=summary))
    session.flush()


def latest(session: Session) -> LedgerVerification | None:
    return session.scalars(
        select(LedgerVerification).order_by(LedgerVerification.id.desc()).limit(1)
    ).first()
