"""`settle verify`: recompute the ledger from first principles and check the audit chain.

The chain is checked link by link (keyed hashes: see domain/services/audit.py) and
against the signed checkpoints kept outside the database (domain/audit_anchor.py);
when everything checks out and the chain has grown, a new checkpoint is appended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain import audit_anchor
from domain.models import LedgerVerification
from domain.repositories import audit as audit_repo
from domain.repositories import verification as verification_repo
from domain.services.audit import GENESIS_HASH, AuditKeys, event_hash

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


def verify(
    *,
    session: Session,
    keys: AuditKeys,
    checkpoints: audit_anchor.CheckpointFile | None = None,
    now: datetime | None = None,
) -> Report:
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
    saved, report.problems["audit_checkpoints"] = (
        checkpoints.read() if checkpoints is not None else ([], [])
    )
    chain = _check_audit_chain(session, report, keys, saved)
    report.problems["audit_chain"] = chain.problems
    report.problems["audit_checkpoints"] += _check_checkpoints(chain, keys, saved)
    if checkpoints is not None and report.ok and chain.last_seq > chain.checkpointed:
        at = (now or datetime.now(UTC)).isoformat()
        checkpoint = audit_anchor.Checkpoint(
            chain_seq=chain.last_seq, hash=chain.last_hash, at=at, key_id=keys.active
        )
        checkpoints.append(audit_anchor.signed(checkpoint, keys.mac))
    return report


@dataclass
class _Chain:
    problems: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    hashes: dict[int, str] = field(default_factory=dict)  # at the checkpoints' seqs
    checkpointed: int = 0  # highest authentic checkpoint


def _check_audit_chain(
    session: Session, report: Report, keys: AuditKeys, saved: list[audit_anchor.Checkpoint]
) -> _Chain:
    """Walks the whole chain; the first broken link is the problem reported."""
    chain = _Chain()
    wanted = {c.chain_seq for c in saved}
    expected_prev, expected_seq = GENESIS_HASH, 1
    for event in audit_repo.iterate_chain(session):
        report.audit_events += 1
        chain.last_seq, chain.last_hash = event.chain_seq, event.hash
        if event.chain_seq in wanted:
            chain.hashes[event.chain_seq] = event.hash
        if chain.problems:
            continue
        key = keys.key(event.key_id)
        if event.chain_seq != expected_seq:
            error = f"expected seq {expected_seq}"
        elif event.prev_hash != expected_prev:
            error = "prev_hash does not link"
        elif key is None:
            error = f"sealed with unknown audit key {event.key_id!r}"
        elif event_hash(event, chain_seq=expected_seq, prev_hash=expected_prev, key=key) != (
            event.hash
        ):
            error = "hash does not match contents under the audit key"
        else:
            expected_prev, expected_seq = event.hash, expected_seq + 1
            continue
        chain.problems.append({"chain_seq": event.chain_seq, "error": error})
    if chain.problems:
        return chain
    head = audit_repo.head(session)
    if head.last_seq != expected_seq - 1 or head.last_hash != expected_prev:
        chain.problems.append(
            {"chain_seq": head.last_seq, "error": "chain head does not match last event"}
        )
        return chain
    # Unsealed rows are not tamper-evident yet; the sealer runs every few seconds,
    # so a row left unsealed for long means the sealer is not running.
    cutoff = datetime.now(UTC) - timedelta(seconds=UNSEALED_GRACE_SECONDS)
    chain.problems.extend(
        {"audit_event": row["id"], "error": "left unsealed (is the sealer running?)"}
        for row in audit_repo.unsealed_older_than(session, cutoff)
    )
    return chain


def _check_checkpoints(
    chain: _Chain, keys: AuditKeys, saved: list[audit_anchor.Checkpoint]
) -> list[dict[str, Any]]:
    """Bad signatures, and the latest checkpoint the chain no longer agrees with."""
    problems: list[dict[str, Any]] = []
    failing: dict[str, Any] | None = None
    for checkpoint in saved:
        if keys.key(checkpoint.key_id) is None or not audit_anchor.authentic(checkpoint, keys.mac):
            problems.append(
                {
                    "checkpoint": checkpoint.chain_seq,
                    "at": checkpoint.at,
                    "error": "checkpoint signature does not verify under the audit key",
                }
            )
            continue
        chain.checkpointed = max(chain.checkpointed, checkpoint.chain_seq)
        if checkpoint.chain_seq > chain.last_seq:
            error = (
                f"chain ends at seq {chain.last_seq} but the checkpoint of {checkpoint.at}"
                f" saw seq {checkpoint.chain_seq}: sealed rows were removed (chain cut)"
            )
        elif chain.hashes.get(checkpoint.chain_seq) != checkpoint.hash:
            error = (
                f"hash at seq {checkpoint.chain_seq} differs from the checkpoint of"
                f" {checkpoint.at}: the chain was rewritten"
            )
        else:
            continue
        if failing is None or checkpoint.chain_seq >= failing["checkpoint"]:
            failing = {"checkpoint": checkpoint.chain_seq, "at": checkpoint.at, "error": error}
    if failing is not None:
        problems.append(failing)
    return problems


def latest(*, session: Session) -> LedgerVerification | None:
    return verification_repo.latest(session)


def record(*, session: Session, report: Report) -> None:
    # Problem rows carry what SQL returned (a sum is a Decimal, ids are UUIDs): as text,
    # as `settle verify --json` prints them. Without this a failed verification could
    # not be recorded at all, and /metrics kept showing the last good one.
    summary = json.loads(json.dumps(report.as_dict(), default=str))
    verification_repo.record(session, ok=report.ok, problems=report.problem_count, summary=summary)
