"""Draining one lane: batches until it is empty, letting go of the lane, quarantine.

The policy a worker follows for a `drain_lane` message, as plain code over ports
so tests can run it without a broker:
- apply batches (one unit of work each) while the lane has work, for at most
  `slice_seconds`; then hand the lane on with a new message (keeping its marker),
  so one busy lane cannot hold a worker process while other lanes wait;
- when a batch was not full, the lane was empty as of that read: let go of its
  marker and look once more. The look is the batch transaction's last statement,
  after the release (READ COMMITTED: each statement sees what committed before it
  began), so it costs no unit of work of its own. A transfer committed before the
  release is seen now; one committed after it found no marker and published its own
  wake-up. (Released before the batch commits, the marker may let a second drain in
  early: it waits on the batch's row locks, then finds those transfers done.) If the
  look finds work while other lanes' messages wait, the lane goes to the back of
  the queue (a new message) rather than being served again at once: with more lanes
  than worker processes, that is what keeps every lane's latency low;
- in big batches, accounts another lane's drain holds are skipped, not waited for: what
  needs them is deferred to the next batch (engine.apply_next_batch,
  `skip_locked_from`), which waits for the locks if the lane's oldest transfer was
  among the deferred;
- a batch that breaks a database invariant rolls back whole; the lane is then
  applied one transfer at a time, and a transfer that fails `quarantine_after` times
  is failed with `internal_error` (audited by the engine), so the rest of the lane
  goes on instead of the sweeper re-running a batch that can never succeed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import IntegrityError

from domain.lanes import Lanes
from domain.rules import INTERNAL_ERROR, Limits
from domain.services import audit, engine, sweeper
from domain.uow import UnitOfWork

logger = logging.getLogger("settle.engine")


class LaneClaims(Protocol):
    """The lane markers (settle/wakeups.py) and the broker, as the drain sees them."""

    def refresh(self, lane: int) -> None: ...
    def release(self, lane: int) -> None: ...
    def claim(self, lane: int) -> bool: ...
    def hand_on(self, lane: int) -> None: ...
    def others_waiting(self) -> bool:
        """Whether other drain messages wait in the queue (True if unknown)."""
        ...


@dataclass(frozen=True, kw_only=True)
class DrainPolicy:
    batch_size: int
    limits: Limits
    slice_seconds: float = 0.5
    quarantine_after: int = 3
    # In batches of at least this many transfers (None: never), defer what needs an
    # account another lane's drain holds rather than wait for it (engine.apply_next_batch);
    # a batch right after one that deferred the lane's oldest transfer waits for the
    # locks, so within a drain no transfer is passed over twice in a row.
    skip_locked_from: int | None = 20


Units = Callable[[], AbstractContextManager[UnitOfWork]]


def drain_lane(
    *,
    lane: int,
    lanes: Lanes,
    units: Units,
    claims: LaneClaims,
    policy: DrainPolicy,
    report: Callable[[engine.BatchResult], None] | None = None,
) -> int:
    """Apply the lane's pending transfers; returns how many reached a terminal state.

    `report` sees each committed batch (the worker logs and counts its outcomes)."""
    slots = lanes.slots(lane)
    applied = 0
    started = time.monotonic()
    wait_for_locks = False
    while True:
        result = _apply_or_quarantine(
            slots,
            units,
            policy,
            lane=lane,
            claims=claims,
            skip_locked_from=None if wait_for_locks else policy.skip_locked_from,
        )
        wait_for_locks = result.deferred_oldest
        applied += result.applied
        if report is not None and result.finished:
            report(result)
        if result.more:  # a full batch, or deferred transfers: more is waiting right now
            if time.monotonic() - started < policy.slice_seconds or not claims.others_waiting():
                claims.refresh(lane)
                continue
            claims.hand_on(lane)
            break
        # Not full: the marker was released inside the batch's transaction.
        if result.waiting and not result.applied:
            break  # held back by another lane's atomic batch; that drain wakes us
        if not (result.pending_after_release and claims.claim(lane)):
            break
        if claims.others_waiting():
            claims.hand_on(lane)  # to the back of the queue, behind the other lanes
            break
    return applied


def seal_audit(units: Units, *, keys: audit.AuditKeys) -> int:
    """One seal of the audit chain in a unit of work of its own (workers/audit_sealer.py
    runs it beside beat, the periodic sweep after its work): not part of a drain, so no
    lane waits for it."""
    with units() as uow:
        return audit.seal(uow.session, keys=keys)


def _apply(
    slots: Sequence[int],
    units: Units,
    policy: DrainPolicy,
    *,
    batch_size: int,
    lane: int,
    claims: LaneClaims,
    fail_with: str | None = None,
    skip_locked_from: int | None = None,
) -> engine.BatchResult:
    with units() as uow:
        result = engine.apply_next_batch(
            uow=uow,
            slots=slots,
            batch_size=batch_size,
            limits=policy.limits,
            fail_with=fail_with,
            skip_locked_from=skip_locked_from,
        )
        if not result.more:
            claims.release(lane)
            result.pending_after_release = sweeper.has_pending(session=uow.session, slots=slots)
        return result


def _apply_or_quarantine(
    slots: Sequence[int],
    units: Units,
    policy: DrainPolicy,
    *,
    lane: int,
    claims: LaneClaims,
    skip_locked_from: int | None,
) -> engine.BatchResult:
    def apply(
        batch_size: int, fail_with: str | None = None, skip_locked_from: int | None = None
    ) -> engine.BatchResult:
        return _apply(
            slots,
            units,
            policy,
            batch_size=batch_size,
            lane=lane,
            claims=claims,
            fail_with=fail_with,
            skip_locked_from=skip_locked_from,
        )

    try:
        return apply(policy.batch_size, skip_locked_from=skip_locked_from)
    except IntegrityError:
        logger.warning("a batch of slots %s broke a database invariant; isolating it", slots)
    for _ in range(policy.quarantine_after):
        try:
            return apply(1)
        except IntegrityError:
            logger.warning("a transfer of slots %s broke a database invariant again", slots)
    result = apply(1, fail_with=INTERNAL_ERROR)
    logger.error("quarantined transfer(s) %s of slots %s as internal_error", result.failed, slots)
    return result
