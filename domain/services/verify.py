"""`settle verify`: recompute the ledger from first principles and check the audit chain.

The chain is checked link by link (keyed hashes: see domain/services/audit.py) and
against the signed checkpoints kept outside the database (domain/audit_anchor.py);
when everything checks out and the chain has grown, a new checkpoint is appended.
"""

from __future__ import annotations

import hmac
import itertools
import json
import multiprocessing
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain import audit_anchor
from domain.db import make_engine, make_session_factory
from domain.models import LedgerVerification
from domain.repositories import audit as audit_repo
from domain.repositories import verification as verification_repo
from domain.services.audit import GENESIS_HASH, AuditKeys, canonical

UNSEALED_GRACE_SECONDS = 600
# Below this many sealed events per process, starting processes costs more than it saves.
EVENTS_PER_JOB = 100_000


@dataclass
class Report:
    totals: dict[str, int] = field(default_factory=dict)
    problems: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    audit_events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each part

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
            "seconds": {part: round(value, 1) for part, value in self.seconds.items()},
        }


def verify(
    *,
    session: Session,
    keys: AuditKeys,
    checkpoints: audit_anchor.CheckpointFile | None = None,
    now: datetime | None = None,
    checks_session: Session | None = None,
    chain_jobs: int = 1,
) -> Report:
    """Runs every check in one read-only REPEATABLE READ snapshot, so that checks
    made by different queries agree with each other even while transfers run.

    Must be the first thing done in the caller's transaction(s). With
    `checks_session` (a second, fresh session), the SQL checks run on it in a thread,
    on the same exported snapshot, while this thread walks the audit chain: the
    database works on the checks while Python hashes, instead of one after the other.
    With `chain_jobs` > 1, that many processes hash the chain (see _check_audit_chain).
    """
    _begin(session)
    saved, unreadable = checkpoints.read() if checkpoints is not None else ([], [])
    report = Report()
    if checks_session is None:
        report.totals, report.problems = _run_checks(session, report)
        chain = _check_audit_chain(session, report, keys, saved, chain_jobs)
    else:
        snapshot = verification_repo.export_snapshot(session)
        _begin(checks_session, snapshot=snapshot)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-checks") as pool:
            checked = pool.submit(_run_checks, checks_session, report)
            chain = _check_audit_chain(session, report, keys, saved, chain_jobs)
            report.totals, report.problems = checked.result()
    report.problems["audit_checkpoints"] = unreadable
    report.problems["audit_chain"] = chain.problems
    report.problems["audit_checkpoints"] += _check_checkpoints(chain, keys, saved)
    if checkpoints is not None and report.ok and chain.last_seq > chain.checkpointed:
        at = (now or datetime.now(UTC)).isoformat()
        checkpoint = audit_anchor.Checkpoint(
            chain_seq=chain.last_seq, hash=chain.last_hash, at=at, key_id=keys.active
        )
        checkpoints.append(audit_anchor.signed(checkpoint, keys.mac))
    return report


def _begin(session: Session, *, snapshot: str | None = None) -> None:
    session.connection(
        execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    )
    if snapshot is not None:
        verification_repo.import_snapshot(session, snapshot)
    verification_repo.prepare(session)


def _run_checks(
    session: Session, report: Report
) -> tuple[dict[str, int], dict[str, list[dict[str, Any]]]]:
    """Totals, and the problems of each of the ledger's SQL checks (in CHECKS order)."""
    started = time.monotonic()
    totals = verification_repo.totals(session)
    problems = {
        check.name: verification_repo.run_check(session, check)
        for check in verification_repo.CHECKS
    }
    report.seconds["checks"] = time.monotonic() - started  # its own key: no race
    return totals, problems


@dataclass
class _Chain:
    problems: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    hashes: dict[int, str] = field(default_factory=dict)  # at the checkpoints' seqs
    checkpointed: int = 0  # highest authentic checkpoint


def _check_audit_chain(
    session: Session,
    report: Report,
    keys: AuditKeys,
    saved: list[audit_anchor.Checkpoint],
    jobs: int = 1,
) -> _Chain:
    """Walks the whole chain; the first broken link is the problem reported.

    With `jobs` > 1 the chain is cut into that many `chain_seq` ranges, each walked
    by a process of its own on the same exported snapshot: a link is checked against
    its predecessor's stored hash, so each range starts from the hash of the row just
    before it, and the first problem of the lowest range is the first of the chain.
    """
    started = time.monotonic()
    chain = _Chain()
    wanted = frozenset(c.chain_seq for c in saved)
    if jobs > 1 and (top := verification_repo.last_chain_seq(session)) >= EVENTS_PER_JOB * jobs:
        url = session.connection().engine.url.render_as_string(hide_password=False)
        snapshot = verification_repo.export_snapshot(session)
        bounds = [1 + top * k // jobs for k in range(jobs)] + [top + 1]
        ranges = [
            _Range(url, snapshot, keys, wanted, first, bounds[k + 1] - 1)
            for k, first in enumerate(bounds[:-1])
        ]
        spawn = multiprocessing.get_context("spawn")  # never fork: the checks run in a thread
        with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn) as pool:
            walks = list(pool.map(_walk_range, ranges))
    else:
        walks = [_walk(verification_repo.stream_chain(session), keys, wanted, GENESIS_HASH, 1)]
    report.audit_events = sum(w.count for w in walks)
    report.seconds["audit_chain"] = time.monotonic() - started
    for walk in walks:
        chain.hashes.update(walk.hashes)
        if walk.count:
            chain.last_seq, chain.last_hash = walk.last_seq, walk.last_hash
        if walk.problem is not None and not chain.problems:
            chain.problems.append(walk.problem)
    expected_prev, expected_seq = walks[-1].expected_prev, walks[-1].expected_seq
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


@dataclass
class _Walk:
    """What walking part of the chain found (picklable: it comes back from a process)."""

    count: int = 0
    problem: dict[str, Any] | None = None
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    hashes: dict[int, str] = field(default_factory=dict)
    expected_prev: str | None = GENESIS_HASH
    expected_seq: int = 1


def _walk(
    rows: Iterable[tuple[Any, ...]],
    keys: AuditKeys,
    wanted: frozenset[int],
    expected_prev: str | None,
    expected_seq: int,
) -> _Walk:
    """The hot loop of verify (a million events: a million iterations), on plain tuples
    and the hash's fast canonical form (domain/services/audit.py)."""
    walk = _Walk()
    loads, digest = json.loads, hmac.digest
    for seq, prev, stored, key_id, at, event_type, actor, subject_type, subject_id, (
        request_id
    ), data in rows:
        walk.count += 1
        walk.last_seq, walk.last_hash = seq, stored
        if seq in wanted:
            walk.hashes[seq] = stored
        if walk.problem is not None:
            continue
        key = keys.key(key_id)
        if seq != expected_seq:
            error = f"expected seq {expected_seq}"
        elif prev != expected_prev:
            error = "prev_hash does not link"
        elif key is None:
            error = f"sealed with unknown audit key {key_id!r}"
        else:
            message = canonical(
                chain_seq=seq,
                prev_hash=prev,
                at=at,
                event_type=event_type,
                actor=actor,
                subject_type=subject_type,
                subject_id=subject_id,
                request_id=request_id,
                data=loads(data),
            )
            if digest(key, message, "sha256").hex() == stored:
                expected_prev, expected_seq = stored, expected_seq + 1
                continue
            error = "hash does not match contents under the audit key"
        walk.problem = {"chain_seq": seq, "error": error}
    walk.expected_prev, walk.expected_seq = expected_prev, expected_seq
    return walk


@dataclass(frozen=True)
class _Range:
    url: str
    snapshot: str
    keys: AuditKeys
    wanted: frozenset[int]
    first: int
    last: int


def _walk_range(part: _Range) -> _Walk:
    """One range of the chain, in a process of its own, on the exported snapshot.

    Starts from the row just before the range; if that row is missing, the chain
    already broke there, and the range's first row says so as a sequential walk would.
    """
    engine = make_engine(part.url, pool_size=1, max_overflow=0, pre_ping=False)
    try:
        with make_session_factory(engine)() as session:
            _begin(session, snapshot=part.snapshot)
            if part.first <= 1:
                rows = verification_repo.stream_chain(session, last=part.last)
                return _walk(rows, part.keys, part.wanted, GENESIS_HASH, 1)
            rows = verification_repo.stream_chain(session, first=part.first - 1, last=part.last)
            first = next(rows, None)
            if first is None:
                return _Walk(expected_prev=None, expected_seq=part.first)
            if first[0] == part.first - 1:  # the predecessor: its hash seeds the range
                return _walk(rows, part.keys, part.wanted, first[2], part.first)
            return _walk(
                itertools.chain([first], rows), part.keys, part.wanted, None, part.first - 1
            )
    finally:
        engine.dispose()


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
