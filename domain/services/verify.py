"""`settle verify`: recompute the ledger from first principles and check the audit chain."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain.models import LedgerVerification
from domain.repositories import audit as audit_repo
from domain.repositories import verification as verification_repo
from domain.services.audit import GENESIS_HASH, event_hash

UNSEALED_GRACE_SECONDS = 600


@dataclass
class Report:
    totals: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    audit_events: int = 0

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    @property
    def problem_count(self) -> int:
        return sum(len(rows) for rows in self.problems.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "totals": {**self.totals, "audit_events": self.audit_events},
            "problems": {name: rows for name, rows in self.problems.items() if rows},
        }


def verify(*, session: Session) -> Report:
    """Runs every check in one read-only REPEATABLE READ snapshot, so that checks
    made by different queries agree with each other even while transfers run.

    Must be the first thing done in the caller's transaction.
    """
    session.connection(
        execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    )
    report = Report(totals=verification_repo.totals(session))
    for name in verification_repo.CHECKS:
        report.problems[name] = verification_repo.run_check(session, name)
    report.problems["audit_chain"] = _check_audit_chain(session, report)
    return report


def _check_audit_chain(session: Session, report: Report) -> list[dict[str, Any]]:
    expected_prev, expected_seq = GENESIS_HASH, 1
    for event in audit_repo.iterate_chain(session):
        report.audit_events += 1
        if event.chain_seq != expected_seq:
            return [{"chain_seq": event.chain_seq, "error": f"expected seq {expected_seq}"}]
        if event.prev_hash != expected_prev:
            return [{"chain_seq": event.chain_seq, "error": "prev_hash does not link"}]
        if event_hash(event, chain_seq=expected_seq, prev_hash=expected_prev) != event.hash:
            return [{"chain_seq": event.chain_seq, "error": "hash does not match contents"}]
        expected_prev, expected_seq = event.hash, expected_seq + 1
    head = audit_repo.head(session)
    if head.last_seq != expected_seq - 1 or head.last_hash != expected_prev:
        return [{"chain_seq": head.last_seq, "error": "chain head does not match last event"}]
    # Unsealed rows are not tamper-evident yet; the sealer runs every few seconds,
    # so a row left unsealed for long means the sealer is not running.
    cutoff = datetime.now(UTC) - timedelta(seconds=UNSEALED_GRACE_SECONDS)
    return [
        {"audit_event": row["id"], "error": "left unsealed (is the sealer running?)"}
        for row in audit_repo.unsealed_older_than(session, cutoff)
    ]


def latest(*, session: Session) -> LedgerVerification | None:
    return verification_repo.latest(session)


def record(*, session: Session, report: Report) -> None:
    verification_repo.record(
        session, ok=report.ok, problems=report.problem_count, summary=report.as_dict()
    )
